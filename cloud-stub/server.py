"""``HubServer``: the whole hub object graph (store, services, MQTT bridge, REST API, optional broker).

``edgeship hub serve``, ``edgeship demo`` and the tests build the hub the same way::

    server = HubServer(HubConfig(workspace=Path("~/.edgeship-hub"), embedded_broker=True, port=0)).start()
    print(server.api_url, server.broker_url)
    server.stop()

Start order: (embedded broker) -> store -> bridge (the services' ``DeviceLink``, so it
is built first) -> services (``HubServices.build``, every collaborator passed in) ->
replication (its own lease, registered; ``replication.py``) -> bridge connected and serving
them -> pending intents drained -> uvicorn -> timers. Stop runs in reverse. With several
replicas on one PostgreSQL database the timers (rollout engine, refresh) work only on the
replica that holds the coordinator lease (ADR 0037). Everything runs in background threads; :meth:`start` returns once
the API accepts requests and the bridge has re-published every device's newest
document.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.deployment import DEFAULT_TTL
from edgeship.errors import ConfigError, SignatureError, TransportError
from edgeship.mqtt import BrokerSettings, parse_broker_url
from edgeship.workspace import Workspace

if TYPE_CHECKING:  # the bridge package imports paho; HubConfig must not
    from edgeship.hub.bridge.limits import InboundLimits

__all__ = [
    "CA_DIR", "DEFAULT_API_PORT", "DEFAULT_BROKER_PORT", "TRUST_ROOT_FILE", "HubConfig", "HubServer", "load_hub_keys",
]

DEFAULT_API_PORT = 8800
DEFAULT_BROKER_PORT = 1883
CA_DIR = "broker-ca"  # in the hub's workspace: the hub CA (ca.pem, ca.key 0600) for broker TLS and devices
TRUST_ROOT_FILE = "trust-root.json"  # in the hub's workspace: the release keys it accepts and its own hub keys
API_START_TIMEOUT = 15.0  # seconds for uvicorn to listen

log = logging.getLogger("edgeship.hub.server")


@dataclass(frozen=True)
class HubConfig:
    workspace: Path
    db_url: str | None = None  # default: sqlite:///<workspace>/hub.db; or postgresql+psycopg://...
    broker_url: str | None = None  # mqtt://host:1883 or mqtts://...; ignored with embedded_broker
    broker_username: str | None = None
    broker_password: str | None = None
    broker_ca: Path | None = None
    broker_protocol: str = "3.1.1"  # "5" turns on shared subscriptions ($share/hub/...)
    embedded_broker: bool = False  # run amqtt in-process on broker_host:broker_port
    broker_host: str = "127.0.0.1"
    broker_port: int = DEFAULT_BROKER_PORT  # 0 picks a free port
    host: str = "127.0.0.1"  # the REST API's address
    port: int = DEFAULT_API_PORT  # 0 picks a free port
    hub_key: str = "hub"  # workspace key that signs deployment documents
    trust_root: Path | None = None  # default: <workspace>/trust-root.json
    # The MQTT client id; default the broker username. Either way the session is persistent (the broker queues device
    # messages while the hub is away, ADR 0019); the generated Mosquitto config makes the client id the username
    # (ADR 0015), so the session is the user's: one user per hub process. No username and no client id (the
    # embedded broker): a random id and a clean session.
    client_id: str | None = None
    # A Mosquitto config folder ('edgeship hub broker-config -o DIR') whose passwd and acl the hub rewrites
    # after every credential change, then SIGHUPs the pid in broker_pid_file (Mosquitto's pid_file).
    broker_config_dir: Path | None = None
    broker_pid_file: Path | None = None
    # A NATS cluster's folder ('broker-config --engine nats -o DIR') whose users.conf the hub rewrites after every
    # credential change, then reloads the nodes: SIGHUP to DIR/<node>.pid, or these argv lists (ADR 0045).
    nats_config_dir: Path | None = None
    nats_reload_commands: tuple[tuple[str, ...], ...] = ()
    # NATS servers (nats://host:4222, the nodes' client ports) whose JetStream stream of device messages this
    # replica shares with the others, instead of subscribing to them over MQTT (ADR 0047); () over MQTT.
    nats_inbound: tuple[str, ...] = ()
    document_ttl: timedelta = DEFAULT_TTL  # how long a signed document is valid; re-issued after half of it
    refresh_interval: float = 600.0  # seconds between checks for documents due for re-issue
    rollout_interval: float = 1.0  # seconds between rollout engine passes (it also runs as soon as reports arrive)
    # What devices may send the hub: payload bytes per channel, messages per second per device, the inbound
    # queue's byte budget (default 64 MiB) and the drop-summary interval; None: InboundLimits() (ADR 0016).
    inbound: InboundLimits | None = None
    # The hub's time (document issue times, reports, telemetry); tests pass a fixed or shifted one.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc), compare=False)


def _bound_socket(host: str) -> socket.socket:
    """A socket bound to a free port of ``host``, held until the API serves on it: no other process can take the
    port between choosing it and listening (a free port looked up, closed and bound again later could be)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    return sock


def load_hub_keys(workspace: Workspace, key_name: str = "hub", trust_root: Path | None = None) -> tuple[Any, Any]:
    """The hub's trust root and signer, or a SignatureError saying how to create what is missing."""
    from edgeship.modules.verify import load_trust_root_file
    from edgeship.signing import Keyring

    path = trust_root or workspace.root / TRUST_ROOT_FILE
    ring = Keyring(workspace)
    if not any(k.name == key_name for k in ring.list("hub")):
        raise SignatureError(
            f"The hub workspace {workspace.root} has no hub signing key {key_name!r}; create it with "
            f"'edgeship keys create --role hub --name {key_name} -w {workspace.root}'."
        )
    if not path.is_file():
        raise SignatureError(
            f"The hub needs a trust root at {path} (the release keys it accepts and its hub key); write it with "
            f"'edgeship keys trust-root --release RELEASE_KEY --hub {key_name} -o {path} -w {workspace.root}'."
        )
    root = load_trust_root_file(path)
    signer = ring.signer(key_name)
    if signer.keyid not in root.role("hub").keyids:
        # After a rotation to another hub key (ADR 0013) the workspace holds it under another name.
        listed = [i for i in ring.list("hub") if i.keyid in root.role("hub").keyids]
        if listed:
            log.info("the trust root lists hub key %r, not %r; signing with it", listed[0].name, key_name)
            return root, ring.signer(listed[0].name)
        raise SignatureError(
            f"The trust root {path} does not list the hub key {key_name!r} ({signer.keyid}); devices would refuse "
            "its documents. Rewrite the trust root with --hub naming this key."
        )
    return root, signer


def _hub_signers(workspace: Workspace) -> list[Any]:
    """Every hub signing key of the workspace (read when a rotation asks, so a key created later counts)."""
    from edgeship.signing import Keyring

    ring = Keyring(workspace)
    return [ring.signer(info.name) for info in ring.list("hub")]


class HubServer:
    """A running hub; use :meth:`start` / :meth:`stop` or ``with HubServer(config) as hub:``."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.workspace = Workspace.at(config.workspace)
        self.broker: Any = None  # EmbeddedBroker when config.embedded_broker
        self.store: Any = None
        self.services: Any = None  # HubServices once started
        self.bridge: Any = None
        self.inbound: Any = None  # NatsInbound with config.nats_inbound
        self.auth_callout: Any = None  # NatsAuthCallout when the NATS folder's users.conf declares one (ADR 0051)
        self.credentials: Any = None  # DeviceCredentials
        self.replication: Any = None  # Replication: leases, change notices, draining gone replicas
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self._engine: threading.Thread | None = None
        self._stopping = threading.Event()
        self._socket = None if config.port else _bound_socket(config.host)  # port 0: a free port, held from now
        self.port = config.port or int(self._socket.getsockname()[1])  # type: ignore[union-attr]
        self.settings: BrokerSettings | None = None

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def broker_url(self) -> str:
        if self.settings is None:
            raise RuntimeError("the hub is not started")
        return self.settings.url

    def _broker_settings(self) -> BrokerSettings:
        c = self.config
        if c.embedded_broker:
            from edgeship.hub.broker import EmbeddedBroker

            self.broker = EmbeddedBroker(c.broker_host, c.broker_port).start()
            return parse_broker_url(self.broker.url)
        if not c.broker_url:
            raise TransportError("The hub needs an MQTT broker: pass --broker mqtt://host:1883 or --embedded-broker.")
        return parse_broker_url(c.broker_url, username=c.broker_username, password=c.broker_password,
                                ca_file=c.broker_ca, protocol=c.broker_protocol)

    def start(self) -> HubServer:
        from edgeship.hub.api import OperatorTokens, create_app
        from edgeship.hub.bridge import MqttBridge
        from edgeship.hub.services import HubServices
        from edgeship.hub.store import HubStore, sqlite_url
        from edgeship.hub.store.notify import feed_for
        from edgeship.hub.trust import CHAIN_DIR, TrustRootFiles
        from edgeship.registry.blobs import BlobStore

        ws = self.workspace.require()
        trust_root, signer = load_hub_keys(ws, self.config.hub_key, self.config.trust_root)
        try:
            self.settings = self._broker_settings()
            self.store = HubStore(self.config.db_url or sqlite_url(ws.root))
            feed = feed_for(self.store.url, application=f"edgeship-hub {self.bridge_client_id()}")
            self.bridge = MqttBridge(self.settings, client_id=self.config.client_id, limits=self.config.inbound,
                                     inbound=not self.config.nats_inbound)
            self.services = HubServices.build(
                self.store, BlobStore(ws.blobs_dir, ws.tmp_dir), trust_root, [signer], self.bridge,
                clock=self.config.clock, ttl=self.config.document_ttl,
                trust_files=TrustRootFiles(self.config.trust_root or ws.root / TRUST_ROOT_FILE, ws.root / CHAIN_DIR),
                hub_keys=partial(_hub_signers, ws), announce=feed.announce,
            )
            self.credentials = self._credentials(ws, feed)
            self.replication = self._replication(ws, feed)
            self.replication.join()
            self.bridge.start(self.services)
            self._start_nats_inbound()
            self._drain_pending()
            self._start_api(create_app(self.services, OperatorTokens(self.store), self.credentials, registry=ws))
            self.replication.start()
            self._start_refresher()
            self._start_rollout_engine()
        except BaseException:
            self.stop()
            raise
        log.info("hub API on %s, MQTT broker %s", self.api_url, self.broker_url)
        return self

    def _credentials(self, ws: Workspace, feed: Any) -> Any:
        """Device credentials: certificates from the workspace's hub CA (made on first use), and the managed
        broker folder (Mosquitto's, or a NATS cluster's users) rewritten now, so a broker started from an older
        folder matches the store."""
        from edgeship.hub.broker import open_ca
        from edgeship.hub.broker.reload import ManagedBroker
        from edgeship.hub.credentials import DeviceCredentials

        c = self.config
        lock, loaded = threading.Lock(), list[Any]()

        def ca() -> Any:  # made or loaded once, under a lock: two first certificates must not make two CAs
            with lock:
                if not loaded:
                    loaded.append(open_ca(ws.root / CA_DIR))
                return loaded[0]

        broker = None
        if c.broker_config_dir is not None:
            broker = ManagedBroker(c.broker_config_dir, hub_username=c.broker_username or "hub",
                                   hub_password=c.broker_password, pid_file=c.broker_pid_file,
                                   crl=lambda serials: ca().revocation_list(serials))
        if c.nats_config_dir is not None:
            from edgeship.hub.broker.nats_reload import CHANGE_TOPIC, ManagedNats

            nats = ManagedNats(c.nats_config_dir, hub_username=c.broker_username or "hub",
                               hub_password=c.broker_password, commands=c.nats_reload_commands,
                               announce=feed.announce)  # fmt: skip
            credentials = DeviceCredentials(self.services.fleet, ca=ca, broker=nats)
            nats.start(credentials.broker_state)  # at start a cluster that cannot be reloaded is an error
            feed.on(CHANGE_TOPIC, partial(nats.refresh, credentials.broker_state))  # another replica's change
            self._start_auth_callout(nats)
            return credentials
        credentials = DeviceCredentials(self.services.fleet, ca=ca, broker=broker)
        if broker is not None:
            broker.apply(credentials.broker_state)  # at start a broker that cannot be reloaded is an error
        return credentials

    def _start_auth_callout(self, nats: Any) -> None:
        """When the cluster's ``users.conf`` sends device logins to the hubs: decide them from the logins ``nats``
        keeps, with the issuer key beside it, over the ``--nats-inbound`` addresses (ADR 0051)."""
        if nats.auth_callout is None:
            return
        from edgeship.hub.broker.nats_callout import SEED_FILE, LoginDecider, NatsAuthCallout, load_issuer

        c = self.config
        if not c.nats_inbound:
            raise ConfigError(f"{nats.users_file} sends device logins to the hub (auth callout); give the nodes' "
                              "client addresses with --nats-inbound nats://HOST:4222, or no device can log in.")
        issuer = load_issuer(nats.folder / SEED_FILE)
        if issuer.public_key != nats.auth_callout:
            raise ConfigError(f"{nats.folder / SEED_FILE} is not the key users.conf names as the auth callout's issuer "
                              f"({nats.auth_callout}); write the folder again with 'edgeship hub broker-config "
                              "--engine nats --auth-callout' and restart the nodes.")  # fmt: skip
        assert self.settings is not None
        self.auth_callout = NatsAuthCallout(c.nats_inbound, LoginDecider(issuer, nats.logins),
                                            username=self.settings.username, password=self.settings.password,
                                            ca_file=self.settings.ca_file,
                                            name=f"edgeship-hub {self.bridge_client_id()} auth").start()  # fmt: skip

    def _start_nats_inbound(self) -> None:
        """With ``nats_inbound``: this replica's share of the devices' messages, through the bridge's subscriber."""
        if not self.config.nats_inbound:
            return
        from edgeship.hub.bridge.nats_inbound import NatsInbound

        assert self.settings is not None
        self.inbound = NatsInbound(self.config.nats_inbound, self.bridge.subscriber, username=self.settings.username,
                                   password=self.settings.password, on_online=self.bridge.resync.device_online,
                                   name=f"edgeship-hub {self.bridge.client_id}",
                                   ca_file=self.settings.ca_file).start()  # fmt: skip

    def bridge_client_id(self) -> str:
        """The MQTT client id the bridge uses (or will): what names this replica."""
        if self.bridge is not None:
            return str(self.bridge.client_id)
        return self.config.client_id or self.config.broker_username or "hub"

    def _replication(self, ws: Workspace, feed: Any) -> Any:
        """Leases and change notices over the store's database; reloads registered for what replicas cache."""
        from edgeship.hub.bridge.adopt import adopt_session
        from edgeship.hub.replication import Replication
        from edgeship.hub.store.lease import leases_for

        assert self.settings is not None
        settings, client_id = self.settings, self.bridge.client_id
        # registered only with a stable client id (a random one's session is clean: nothing to drain)
        shared = self.store.url.startswith("postgresql") and (self.config.client_id or settings.username) is not None
        adopt = partial(adopt_session, settings, fleet=self.services.fleet, limits=self.config.inbound)
        feed.on("trust", partial(self._reload_trust, ws))
        feed.on("rollouts", self._rollouts_changed)
        return Replication(
            self.store, leases_for(self.store.url, application=f"edgeship-hub {client_id}"), feed,
            client_id=client_id, protocol=settings.protocol, shared=shared,
            clock=self.config.clock, adopt=adopt if settings.protocol == "5" else None,
            finish_pending=self._drain_pending,  # a replica killed between a committed change and its documents
        )

    def _reload_trust(self, ws: Workspace) -> None:
        """Another replica rotated the trust root (or the hub key): read the files it saved (a workspace the
        replicas share) and sign with the hub key the new root lists."""
        root, signer = load_hub_keys(ws, self.config.hub_key, self.config.trust_root)
        keys = self.services.keys
        with keys.lock:
            if root.version != keys.trust_root.version or [signer.keyid] != [s.keyid for s in keys.signers]:
                keys.replace(root, [signer])
                log.info("trust root v%d from another replica installed", root.version)

    def _rollouts_changed(self) -> None:
        """An operator moved a rollout through another replica: the engine (if it runs here) looks at once."""
        self.services.rollouts.changed()
        self.services.wakeup.set()

    def _leading(self) -> bool:
        return self.replication is None or bool(self.replication.leading())

    def _drain_pending(self) -> None:
        """Finish the re-evaluations a previous run committed but did not deliver (killed mid-change), before the
        API opens, so a retried request already finds the devices served; and again whenever this replica takes the
        periodic work over (a coordinator killed after starting a rollout's wave, before issuing it: the wave would
        otherwise wait for the refresh timer) or finds another replica gone (killed between a REST change and its
        documents). An error is logged: the refresh timer drains again."""
        try:
            sent = self.services.issuing.drain_pending()
        except Exception:
            log.exception("finishing pending re-evaluations failed; the refresh timer will try again")
            return
        if sent:
            log.info("finished pending re-evaluations left by a stopped run or replica: %d document(s)", sent)

    def _start_refresher(self) -> None:
        """Re-issue documents before they expire, every ``refresh_interval`` seconds, until :meth:`stop`."""
        self._stopping.clear()

        def loop() -> None:
            while not self._stopping.wait(self.config.refresh_interval):
                if not self._leading():
                    continue
                try:
                    sent = self.services.issuing.refresh()
                except Exception:  # a database hiccup must not end re-issuing for good
                    log.exception("re-issuing documents due for renewal failed; trying again later")
                    continue
                if sent:
                    log.info("re-issued %d documents before their expiry", sent)

        self._refresher = threading.Thread(target=loop, name="edgeship-hub-refresh", daemon=True)
        self._refresher.start()

    def _start_rollout_engine(self) -> None:
        """Run the rollout engine's pass every ``rollout_interval`` seconds, and as soon as reports arrive.

        It starts with a pass, so a hub restarted in the middle of a rollout resumes it at once
        (the state is in the database, ``docs/rollouts.md``).
        """
        services = self.services

        def loop() -> None:
            interval = self.config.rollout_interval
            last_full = 0.0
            woken = False
            while not self._stopping.is_set():
                full = not woken or time.monotonic() - last_full >= interval
                if not self._leading():  # another replica runs the engine; this one takes over when it is gone
                    woken = services.wakeup.wait(interval)
                    last_full = 0.0
                    continue
                try:
                    services.rollouts.tick(full=full)
                except Exception:  # a database hiccup must not end the rollouts for good
                    log.exception("the rollout engine's pass failed; trying again")
                if full:
                    last_full = time.monotonic()
                woken = services.wakeup.wait(interval)

        self._engine = threading.Thread(target=loop, name="edgeship-hub-rollouts", daemon=True)
        self._engine.start()

    def _start_api(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=self.config.host, port=self.port, log_level="warning", lifespan="off",
                                access_log=False)
        self._uvicorn = uvicorn.Server(config)
        held, self._socket = self._socket, None  # the server closes it when it stops; a restart binds the port again
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [held]} if held else {},
                                        name="edgeship-hub-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + API_START_TIMEOUT
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TransportError(
                    f"The hub API could not listen on {self.config.host}:{self.port}; pick another --port "
                    "or stop what uses it."
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice or after a failed start."""
        self._stopping.set()
        if self._refresher is not None:
            self._refresher.join(10)
            self._refresher = None
        if self._engine is not None:
            assert self.services is not None
            self.services.wakeup.set()
            self._engine.join(10)
            self._engine = None
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(10)
        self._uvicorn = self._thread = None
        if self._socket is not None:  # never served on (a start that failed before the API)
            self._socket.close()
            self._socket = None
        if self.replication is not None:
            self.replication.stop()
            self.replication = None
        if self.auth_callout is not None:
            self.auth_callout.stop()
            self.auth_callout = None
        if self.inbound is not None:  # before the bridge's subscriber stops: nothing fetched after that
            self.inbound.stop()
            self.inbound = None
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
