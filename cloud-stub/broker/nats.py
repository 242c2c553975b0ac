"""The broker's configuration for a NATS cluster with MQTT listeners (nats-server 2.10+; ADR 0039).

Rendering is pure (text from data); :func:`write_nats_config` writes one
``<node>.conf`` per cluster node and the shared ``users.conf`` they include, each
atomically, so a node reloading (``nats-server --signal reload``, or SIGHUP) never
reads half a file. The isolation rule of ``docs/mqtt.md`` is the same as Mosquitto's
(``DEVICE_READ``/``DEVICE_WRITE`` of :mod:`.mosquitto`), written as NATS subject
permissions per user, since NATS has no ``%u`` pattern::

    edgeship/v1/devices/dev.1/desired   (MQTT topic)
    edgeship.v1.devices.dev//1.desired  (NATS subject: '/' becomes '.', '.' becomes '//')

What NATS needs beyond Mosquitto, measured on 2.15.1 (``benchmarks/broker/RESULTS.md``):

- ``$MQTT.sub.>`` in every restricted user's subscribe permissions, or every QoS 1
  subscription is refused (its JetStream consumer delivers on such a subject);
- ``allowed_connection_types: ["MQTT"]``: a device's login must not work on the NATS
  protocol port, where ``$MQTT.sub.>`` would let it read other devices' deliveries (a hub
  user may also log in there, for the shared inbound stream of ADR 0047, with the
  JetStream API subjects of that stream and consumer only, :func:`inbound_api_subjects`);
- for a filter ending in ``#``, its parent subject as well (``commands/#`` is subscribed
  as ``…commands.>`` and ``…commands``; without the second NATS refused every device's
  ``commands/#`` and no direct method reached a device through the cluster);
- passwords as bcrypt hashes (``$2a$``/``$2b$``): NATS checks no other format, so
  Mosquitto's ``$7$`` hashes of the hub's store cannot be reused (``docs/scale.md``);
- TLS (ADR 0048): with :class:`NatsTls` every node serves its MQTT listener, its NATS client
  port and its routes over TLS only, with one certificate from the hub CA; routes verify
  each other (NATS requires it), so that certificate also says ``clientAuth``;
- client ids without ``.``: edgeship's clients send ``.`` as ``~``
  (:func:`edgeship.mqtt.client.mqtt_client_id`). NATS does not bind a client id to the
  login as the Mosquitto config does (ADR 0015): a device that sends another device's
  client id can close that device's connection, though not read its topics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.errors import ConfigError, InputError
from edgeship.fsutil import atomic_write_text
from edgeship.hub.broker.mosquitto import DEVICE_READ, DEVICE_WRITE
from edgeship.hub.broker.nats_jwt import ACCOUNT, public_key_bytes
from edgeship.mqtt.identity import is_hub_identity, validate_device_id, validate_hub_identity
from edgeship.mqtt.topics import TOPIC_ROOT

__all__ = [
    "AUTH_SUBJECT",
    "BCRYPT_COST",
    "INBOUND_CONSUMER",
    "INBOUND_STREAM",
    "PID_SUFFIX",
    "NatsFiles",
    "NatsNode",
    "NatsSettings",
    "NatsTls",
    "NatsUser",
    "check_tls_files",
    "hash_password_bcrypt",
    "inbound_api_subjects",
    "nats_subject",
    "nats_subscribe_subjects",
    "parse_auth_callout",
    "parse_users",
    "render_node_config",
    "render_users",
    "user_permissions",
    "write_nats_config",
]

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"  # where a node asks the auth callout about a login (ADR 0051)
INBOUND_STREAM = "EDGESHIP_INBOUND"  # the devices' reported/telemetry/online, shared by hub replicas (ADR 0047)
INBOUND_CONSUMER = "hub"  # the one durable pull consumer every replica fetches from
PID_SUFFIX = ".pid"  # <node>.pid beside <node>.conf: where a node writes its pid (render_node_config)
# Seconds a node waits for a login's answer (NATS's authorization timeout; 2 by default): with the auth callout the
# answer comes from a hub, and in a reconnect storm it waits behind other logins' bcrypt checks (ADR 0051).
CALLOUT_AUTH_TIMEOUT = 5.0
BCRYPT_COST = 6  # every connect pays it: 6 is ~4 ms here, so a storm of 10,000 reconnects costs ~40 CPU-seconds
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def nats_subject(topic_filter: str) -> str:
    """NATS's subject for an MQTT topic or filter: ``/`` -> ``.``, ``.`` -> ``//``, ``+`` -> ``*``, ``#`` -> ``>``."""
    return ".".join({"+": "*", "#": ">"}.get(level, level.replace(".", "//")) for level in topic_filter.split("/"))


def nats_subscribe_subjects(topic_filter: str) -> list[str]:
    """The subjects a subscribe permission needs for an MQTT filter: NATS subscribes ``a/#`` as both ``a.>`` and
    ``a`` (``#`` also matches the parent level), and refuses the whole filter (SUBACK 0x80) if either is denied."""
    subject = nats_subject(topic_filter)
    return [subject[: -len(".>")], subject] if subject.endswith(".>") else [subject]


def hash_password_bcrypt(password: str, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash NATS accepts as a user's ``password`` (``$2b$<cost>$...``)."""
    import bcrypt

    if not password:
        raise InputError("A broker password cannot be empty.")
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=cost)).decode("ascii")


@dataclass(frozen=True)
class NatsUser:
    """One login: a device (username = device id) or a hub process (``hub``, ``hub-<name>``), bcrypt password."""

    username: str
    password_hash: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            validate_device_id(self.username)
        except InputError as exc:
            raise InputError(f"Broker user {self.username!r} is not usable: {exc}") from exc
        if not self.password_hash.startswith(_BCRYPT_PREFIXES):
            raise InputError(
                f"Broker user {self.username!r} has a password hash NATS cannot check (it takes bcrypt, $2a$/$2b$); "
                "make one with hash_password_bcrypt() or 'htpasswd -bnBC 6 \"\" PASSWORD'."
            )

    @property
    def is_hub(self) -> bool:
        return is_hub_identity(self.username)


def inbound_api_subjects(stream: str = INBOUND_STREAM, consumer: str = INBOUND_CONSUMER) -> list[str]:
    """The JetStream API subjects a hub publishes to for the shared inbound stream and its one consumer, no more
    (``hub serve --nats-inbound``, ADR 0047): look up and create both, fetch, acknowledge. Replies come on
    ``_INBOX.>``. Deleting, purging or reading the stream any other way is not among them."""
    api = "$JS.API"
    return [
        f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.CREATE.{stream}",
        f"{api}.CONSUMER.INFO.{stream}.{consumer}", f"{api}.CONSUMER.CREATE.{stream}.{consumer}",
        f"{api}.CONSUMER.CREATE.{stream}.{consumer}.>", f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}", f"$JS.ACK.{stream}.{consumer}.>",
    ]


def user_permissions(user: NatsUser) -> dict[str, object]:
    """The user's ``permissions``: the hub's wide rights for a hub identity, else its own device's channels."""
    if user.is_hub:
        validate_hub_identity(user.username)
        everything = nats_subject(f"{TOPIC_ROOT}/#")
        return {"publish": [everything, *inbound_api_subjects()],
                "subscribe": [*nats_subscribe_subjects(f"{TOPIC_ROOT}/#"), "$MQTT.sub.>", "_INBOX.>", AUTH_SUBJECT],
                "allow_responses": True}  # the auth callout answers on the node's reply subject (ADR 0051)
    own = f"{TOPIC_ROOT}/{user.username}"
    return {
        "publish": [nats_subject(f"{own}/{channel}") for channel in DEVICE_WRITE],
        "subscribe": [subject for channel in DEVICE_READ for subject in nats_subscribe_subjects(f"{own}/{channel}")]
        + ["$MQTT.sub.>"],
    }


def render_users(users: Iterable[NatsUser], auth_callout: str | None = None) -> str:
    """``users.conf``: the ``authorization`` block every node includes. Duplicate names are refused.

    ``auth_callout``: the issuer's public account nkey; the nodes then send every login but the hubs' to the hub
    replicas (:mod:`.nats_callout`, ADR 0051), and the device lines stay only as the fallback for a cluster
    restarted without the callout."""
    seen: set[str] = set()
    entries = []
    for user in sorted(users, key=lambda u: u.username):
        if user.username in seen:
            raise InputError(f"Broker user {user.username!r} is listed twice; keep one entry per device.")
        seen.add(user.username)
        # a hub also speaks NATS for the shared inbound stream (ADR 0047); a device only MQTT
        kinds = ["MQTT", "STANDARD"] if user.is_hub else ["MQTT"]
        entry = {"user": user.username, "password": user.password_hash, "permissions": user_permissions(user),
                 "allowed_connection_types": kinds}  # fmt: skip
        entries.append("  " + json.dumps(entry, separators=(", ", ": ")))
    hubs = sorted(name for name in seen if is_hub_identity(name))
    if not hubs:
        raise InputError("The broker users lack a hub user ('hub' or 'hub-<name>'); add one, or no hub can log in.")
    callout = []
    if auth_callout is not None:
        public_key_bytes(auth_callout, ACCOUNT)  # an account nkey, or refused
        callout = [f" timeout: {CALLOUT_AUTH_TIMEOUT:g}",
                   f' auth_callout {{ issuer: "{auth_callout}", auth_users: {json.dumps(hubs)} }}']
    return "\n".join(["# edgeship broker users (generated; edit the hub's device list instead).", "authorization {",
                      " users = [", *entries, " ]", *callout, "}", ""])


@dataclass(frozen=True)
class NatsNode:
    """One cluster member: its name and the four ports it listens on (``host`` for all but monitoring)."""

    name: str
    client_port: int  # NATS protocol (no device may log in there: allowed_connection_types)
    cluster_port: int  # routes between the nodes
    mqtt_port: int  # where devices and the hub connect
    http_port: int  # monitoring: /healthz says when JetStream (and so MQTT) is ready
    host: str = "127.0.0.1"
    # The monitoring port has no login and /connz lists every connection's user and address: loopback only, reached
    # from the node's host (a health check there, or ssh); another address only where that network is private.
    monitor_host: str = "127.0.0.1"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"


@dataclass(frozen=True)
class NatsTls:
    """TLS for every node: its MQTT listener, its NATS client port and its routes (ADR 0048).

    One server certificate for all nodes, naming every host devices, hubs and peers dial, and the CA that signed
    it (the routes verify each other with it; MQTT and NATS clients log in by password, not certificate).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    handshake_timeout: float = 5.0  # seconds; NATS's 2 s default is short for a device on a slow link


@dataclass(frozen=True)
class NatsSettings:
    """JetStream choices for the MQTT sessions (measured in ``benchmarks/broker``; ADR 0039)."""

    cluster_name: str = "edgeship"
    stream_replicas: int = 3  # sessions, retained documents, QoS 1 messages: on every node
    # Each QoS 1 subscription's consumer. R1 measured no faster here (benchmarks/broker/RESULTS.md: subscribe, failover
    # and storm within noise of R3) and an R1 consumer dies with its node, its delivery state with it: R3.
    consumer_replicas: int = 3
    consumer_memory_storage: bool = True  # replicated in memory: no disk write per subscription
    # JetStream consumers a stream may have: nats-server 2.15 defaults to 1,000, and every device's two QoS 1
    # subscriptions are two consumers of one stream, so the cluster refused devices past ~500 (-1: no limit;
    # benchmarks/fleet/RESULTS.md, "Through a NATS cluster").
    max_consumers: int = -1
    max_payload: int = 1024 * 1024  # a desired document or trust-root chain (docs/mqtt.md)
    max_memory_store: int = 256 * 1024 * 1024
    max_file_store: int = 8 * 1024 * 1024 * 1024
    tls: NatsTls | None = None  # None: every port speaks in clear (a private network only)
    auth_callout: str | None = None  # the issuer's public account nkey: the hubs decide device logins (ADR 0051)


_SCAFFOLD = {"authorization {", "users = [", "]", "}"}  # render_users's lines around the entries
_TIMEOUT = re.compile(r"^timeout: [0-9.]+$")
_CALLOUT = re.compile(r'^auth_callout \{ issuer: "(?P<issuer>A[A-Z2-7]{55})", auth_users: (?P<hubs>\[[^\]]*\]) \}$')


def parse_auth_callout(text: str) -> tuple[str, list[str]] | None:
    """The auth callout's issuer and hub users in a ``users.conf`` :func:`render_users` wrote, or None."""
    for raw in text.splitlines():
        match = _CALLOUT.match(raw.strip())
        if match is not None:
            return match["issuer"], list(json.loads(match["hubs"]))
    return None


def parse_users(text: str) -> dict[str, str]:
    """``username -> password hash`` of a ``users.conf`` :func:`render_users` wrote (so a running hub keeps the
    hub users' lines it did not write, ``nats_reload``). Any other text is refused: it is not edgeship's."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line in _SCAFFOLD or _CALLOUT.match(line) or _TIMEOUT.match(line):
            continue
        try:
            entry = json.loads(line)
            name, hashed = entry["user"], entry["password"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"users.conf line {number} is not a user entry edgeship writes; write the file with "
                              "'edgeship hub broker-config --engine nats' instead of editing it.") from exc
        if not isinstance(name, str) or not isinstance(hashed, str):
            raise ConfigError(f"users.conf line {number} has a user or password that is not text; write the file "
                              "with 'edgeship hub broker-config --engine nats'.")  # fmt: skip
        users[name] = hashed
    return users


def render_node_config(node: NatsNode, cluster: Sequence[NatsNode], settings: NatsSettings, store_dir: Path,
                       users_file: Path, pid_file: Path | None = None) -> str:  # fmt: skip
    """One node's config: JetStream, routes to the other nodes, the MQTT listener, the users include.

    ``users_file`` must sit in the config's folder (NATS reads includes relative to it). ``pid_file``
    is where the node writes its pid: a hub on the same host signals it after rewriting the users
    (``hub serve --nats-config-dir``, ``nats_reload``).
    """
    if len(cluster) < 3 or settings.stream_replicas > len(cluster):
        raise ConfigError(
            f"A NATS cluster for edgeship needs at least 3 nodes and stream_replicas <= nodes ({len(cluster)} "
            f"nodes, stream_replicas {settings.stream_replicas}); JetStream needs a majority to keep working."
        )
    if node not in cluster:
        raise ConfigError(f"Node {node.name!r} is not one of the cluster's nodes; list it in the cluster.")
    routes = [f'"nats-route://{other.host}:{other.cluster_port}"' for other in cluster if other != node]
    tls = settings.tls
    with_ca, without_ca = (_tls_block(tls, with_ca=True), _tls_block(tls, with_ca=False)) if tls else ("", "")
    return "\n".join([
        "# edgeship NATS node configuration (generated by 'edgeship hub broker-config --engine nats').",
        f'server_name: "{node.name}"',
        *([f'pid_file: "{pid_file.resolve()}"'] if pid_file is not None else []),
        f"listen: {node.host}:{node.client_port}",
        *([without_ca] if tls else []),  # the NATS client port (hubs' --nats-inbound)
        f"http: {node.monitor_host}:{node.http_port}",
        f"max_payload: {settings.max_payload}",
        f'jetstream {{ store_dir: "{store_dir.resolve()}", max_memory_store: {settings.max_memory_store}, '
        f"max_file_store: {settings.max_file_store}, limits: {{ default_max_consumers: {settings.max_consumers} }} }}",
        f'cluster {{ name: "{settings.cluster_name}", listen: {node.host}:{node.cluster_port}, '
        f"routes: [{', '.join(routes)}]{', ' + with_ca if tls else ''} }}",
        f"mqtt {{ listen: {node.host}:{node.mqtt_port}, stream_replicas: {settings.stream_replicas}, "
        f"consumer_replicas: {settings.consumer_replicas}, "
        f"consumer_memory_storage: {'true' if settings.consumer_memory_storage else 'false'}"
        f"{', ' + without_ca if tls else ''} }}",
        f'include "{users_file.name}"',  # NATS resolves an include beside the including file
        "",
    ])


def _tls_block(tls: NatsTls, *, with_ca: bool) -> str:
    """A ``tls { ... }`` block. The CA only where NATS verifies a peer with it: the routes, always both ways
    (clients log in by password; with a CA the client port and the MQTT listener would still ask for no
    client certificate, since that needs ``verify``)."""
    entries = [f'cert_file: "{tls.cert_file.resolve()}"', f'key_file: "{tls.key_file.resolve()}"',
               *([f'ca_file: "{tls.ca_file.resolve()}"'] if with_ca else []), f"timeout: {tls.handshake_timeout:g}"]
    return "tls { " + ", ".join(entries) + " }"


def check_tls_files(tls: NatsTls) -> None:
    """Refuse what would stop a node at start or leak its key: missing or unreadable files, a certificate that is
    not PEM or not the key's, a key group or others may read (anyone who reads it can pose as the cluster)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    texts: dict[str, bytes] = {}
    for what, path in (("certificate", tls.cert_file), ("key", tls.key_file), ("CA certificate", tls.ca_file)):
        try:
            texts[what] = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"Cannot read the NATS TLS {what} {path} ({exc.strerror}); check the path and its "
                             "permissions.") from exc  # fmt: skip
    mode = Path(tls.key_file).stat().st_mode & 0o777
    if mode & 0o077:
        raise InputError(f"The NATS TLS key {tls.key_file} may be read by group or others (mode {mode:o}); "
                         f"run chmod 600 {tls.key_file}, since whoever reads it can pose as the cluster.")
    try:
        cert = x509.load_pem_x509_certificate(texts["certificate"])
        x509.load_pem_x509_certificate(texts["CA certificate"])
        key = serialization.load_pem_private_key(texts["key"], password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"The NATS TLS certificate, key or CA file is not an unencrypted PEM file ({exc}); give "
                         "PEM files such as 'edgeship hub broker-config --tls-host' writes.") from exc  # fmt: skip
    if key.public_key() != cert.public_key():
        raise InputError(f"The NATS TLS key {tls.key_file} does not belong to the certificate {tls.cert_file}; give "
                         "the matching pair.")  # fmt: skip


@dataclass(frozen=True)
class NatsFiles:
    configs: dict[str, Path]  # node name -> its config file
    users_file: Path


def write_nats_config(folder: Path, nodes: Sequence[NatsNode], users: Iterable[NatsUser],
                      settings: NatsSettings | None = None) -> NatsFiles:  # fmt: skip
    """Write ``users.conf`` (0600) and ``<node>.conf`` per node into ``folder``, each atomically.

    Each node keeps its JetStream data in ``folder/<node>-data`` and its pid in
    ``folder/<node>.pid``. Reload a running node after a user change with ``nats-server
    --signal reload=<pid>`` (or SIGHUP); ``hub serve --nats-config-dir`` does it.
    """
    settings = settings or NatsSettings()
    folder = Path(folder)
    if settings.tls is not None:
        check_tls_files(settings.tls)
    names = [node.name for node in nodes]
    if len(set(names)) != len(names):
        raise ConfigError(f"NATS node names must differ ({', '.join(names)}); give each node its own name.")
    users_file = folder / "users.conf"
    text = render_users(users, settings.auth_callout)
    configs = {node.name: folder / f"{node.name}.conf" for node in nodes}
    rendered = {node.name: render_node_config(node, nodes, settings, folder / f"{node.name}-data", users_file,
                                              folder / f"{node.name}{PID_SUFFIX}") for node in nodes}  # fmt: skip
    atomic_write_text(users_file, text, mode=0o600)
    for name, path in configs.items():
        atomic_write_text(path, rendered[name], mode=0o644)
    return NatsFiles(configs, users_file)
