"""``edgeship hub ...``: run the hub (``serve``), create operator tokens, upload modules to it.

Thin: the object graph lives in :mod:`edgeship.hub.server`, the API client in
:mod:`edgeship.hub.client`. The hub's dependencies (FastAPI, SQLAlchemy, paho,
amqtt, httpx) are imported only when a command runs, so ``edgeship`` starts
without the ``hub`` extra.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, print_json, workspace_from
from edgeship.errors import InputError

if TYPE_CHECKING:
    from edgeship.hub.client import HubClient
    from edgeship.hub.store import TokenRecord, TokenStore

__all__ = ["HubTokenOpt", "HubUrlOpt", "hub_app", "hub_client", "register"]

hub_app = typer.Typer(help="Run the hub (REST API + MQTT bridge) and administer it.", no_args_is_help=True)
token_app = typer.Typer(help="Operator tokens for the hub's REST API.", no_args_is_help=True)
module_app = typer.Typer(help="Modules on the hub.", no_args_is_help=True)
trust_app = typer.Typer(help="The hub's trust root and its rotation to every device.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")
hub_app.add_typer(module_app, name="module")
hub_app.add_typer(trust_app, name="trust-root")

HubUrlOpt = Annotated[
    str | None,
    typer.Option("--hub", envvar="EDGESHIP_HUB_URL", help="Hub API URL (default http://127.0.0.1:8800).",
                 show_default=False),
]
HubTokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="EDGESHIP_HUB_TOKEN", help="Operator token (see 'edgeship hub token create').",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: the workspace's hub.db).", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")


def _need_hub_extra() -> None:
    try:
        import alembic  # noqa: F401
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import paho.mqtt  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ModuleNotFoundError as exc:
        raise InputError(
            f"The hub needs the '{exc.name}' package; install it with pip install 'edgeship[hub]'."
        ) from exc


def hub_client(hub: str | None, token: str | None) -> HubClient:
    _need_hub_extra()
    from edgeship.hub.client import HubClient

    return HubClient(hub, token)


def _nats_inbound_url(url: str) -> str:
    """A ``--nats-inbound`` address, checked: ``nats://`` or ``tls://``, a host and a port, no login in it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme not in ("nats", "tls") or not parts.hostname or port is None:
        raise InputError(f"--nats-inbound {url!r} is not a NATS address; give nats://HOST:PORT (a node's client "
                         "port, 4222 by default; tls://HOST:PORT on a cluster with TLS).")
    if parts.username or parts.password:
        raise InputError(f"--nats-inbound {parts.hostname}:{port} must not carry a login; the hub logs in as "
                         "--broker-username with --broker-password.")
    return f"{parts.scheme}://{parts.hostname}:{port}"


@hub_app.command("serve")
def serve(
    workspace: WorkspaceOpt = None,
    db: Annotated[str | None, typer.Option("--db", help="Database URL (default: SQLite hub.db in the workspace; "
                                           "or postgresql+psycopg://user@host/db).", show_default=False)] = None,
    broker: Annotated[str | None, typer.Option("--broker", help="MQTT broker URL, mqtt://host:1883 or mqtts://...",
                                               show_default=False)] = None,
    broker_username: Annotated[str | None, typer.Option(
        "--broker-username", help="The hub's broker user (and MQTT client id); with the generated Mosquitto config "
        "'hub' or 'hub-<name>', one per hub process.", show_default=False)] = None,
    broker_password: Annotated[str | None, typer.Option("--broker-password", envvar="EDGESHIP_BROKER_PASSWORD",
                                                        show_default=False)] = None,
    broker_ca: Annotated[Path | None, typer.Option("--broker-ca", help="CA file for mqtts:// and tls://.",
                                                   show_default=False)] = None,
    mqtt5: Annotated[bool, typer.Option("--mqtt5", help="Speak MQTT 5 (shared subscriptions for replicas).")] = False,
    embedded_broker: Annotated[bool, typer.Option("--embedded-broker",
                                                  help="Run an amqtt broker in-process (laptop use).")] = False,
    broker_port: Annotated[int, typer.Option("--broker-port", help="Port of the embedded broker.")] = 1883,
    host: Annotated[str, typer.Option("--host", help="Address of the REST API.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the REST API.")] = 8800,
    hub_key: Annotated[str, typer.Option("--hub-key", help="Workspace key that signs documents.")] = "hub",
    trust_root: Annotated[Path | None, typer.Option("--trust-root", help="Trust root file (default: "
                                                    "<workspace>/trust-root.json).", show_default=False)] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    broker_config_dir: Annotated[Path | None, typer.Option(
        "--broker-config-dir", help="Mosquitto config folder ('hub broker-config -o DIR') whose passwd and acl the "
        "hub rewrites on every device credential change.", show_default=False)] = None,
    broker_pid_file: Annotated[Path | None, typer.Option(
        "--broker-pid-file", help="Mosquitto's pid_file: the hub sends SIGHUP there after rewriting the folder.",
        show_default=False)] = None,
    nats_config_dir: Annotated[Path | None, typer.Option(
        "--nats-config-dir", help="A NATS cluster's folder ('hub broker-config --engine nats -o DIR') whose users.conf "
        "the hub rewrites on every device credential change, then reloads the nodes (SIGHUP to DIR/<node>.pid).",
        show_default=False)] = None,
    nats_reload_command: Annotated[list[str] | None, typer.Option(
        "--nats-reload-command", help="With --nats-config-dir: run this (no shell; repeat for several) after each "
        "rewrite instead of signalling pids, e.g. 'ssh n1 nats-server --signal reload'.", metavar="CMD",
        show_default=False)] = None,
    nats_inbound: Annotated[list[str] | None, typer.Option(
        "--nats-inbound", help="On a NATS cluster: take the devices' reported/telemetry/online from its JetStream, "
        "shared with the other replicas, at this NATS address (nats://host:4222, a node's client port; repeat for "
        "more nodes), logged in as --broker-username; also where the hub answers the cluster's auth callout when "
        "--nats-config-dir's users.conf has one ('broker-config --engine nats --auth-callout').", metavar="URL",
        show_default=False)] = None,
) -> None:
    """Run the hub: REST API and MQTT bridge (and an embedded broker with --embedded-broker). Ctrl-C stops it."""
    _need_hub_extra()
    from edgeship.hub.broker.nats_reload import parse_reload_command
    from edgeship.hub.server import HubConfig, HubServer

    if nats_config_dir is not None and broker_config_dir is not None:
        raise InputError("Give --broker-config-dir (Mosquitto) or --nats-config-dir (a NATS cluster), not both.")
    if nats_reload_command and nats_config_dir is None:
        raise InputError("--nats-reload-command needs --nats-config-dir: the folder whose users.conf it reloads.")
    nats_servers = tuple(_nats_inbound_url(url) for url in nats_inbound or ())
    if nats_servers and (embedded_broker or not broker_username):
        raise InputError("--nats-inbound needs --broker URL and --broker-username: the hub logs in to NATS as its "
                         "broker user ('hub' or 'hub-<name>' in the cluster's users.conf).")
    if embedded_broker == (broker is not None):
        raise InputError("Give either --broker mqtt://host:port or --embedded-broker (exactly one).")
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise InputError(f"Unknown --log-level {log_level!r}; use debug, info, warning or error.")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("amqtt").setLevel(max(level, logging.WARNING))
    ws = workspace_from(workspace)
    config = HubConfig(
        workspace=ws.root, db_url=db, broker_url=broker, broker_username=broker_username,
        broker_password=broker_password, broker_ca=broker_ca, broker_protocol="5" if mqtt5 else "3.1.1",
        embedded_broker=embedded_broker, broker_port=broker_port, host=host, port=port, hub_key=hub_key,
        trust_root=trust_root, broker_config_dir=broker_config_dir, broker_pid_file=broker_pid_file,
        nats_config_dir=nats_config_dir, nats_inbound=nats_servers,
        nats_reload_commands=tuple(parse_reload_command(text) for text in nats_reload_command or ()),
    )
    if broker_pid_file is not None and broker_config_dir is None:
        raise InputError("--broker-pid-file needs --broker-config-dir: the folder the hub rewrites before a reload.")
    server = HubServer(config).start()
    stop = threading.Event()
    # SIGTERM (systemd, docker stop, kill) and SIGINT (Ctrl-C) both stop cleanly: bridge, store, broker.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    console.print(f"hub API     {server.api_url}  (docs at {server.api_url}/docs)", highlight=False)
    console.print(f"MQTT broker {server.broker_url}{'  (embedded)' if embedded_broker else ''}", highlight=False)
    console.print(f"dashboard   {server.api_url}/ui/  (sign in with an operator token: "
                  "'edgeship hub token create NAME')", highlight=False)
    console.print("Ctrl-C stops the hub.", highlight=False)
    try:
        stop.wait()
        console.print("stopping the hub", highlight=False)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _token_store(workspace: Path | None, db: str | None) -> Iterator[TokenStore]:
    """The hub database's tokens, opened (and upgraded) like ``hub serve`` opens it."""
    _need_hub_extra()
    from edgeship.hub.store import HubStore, TokenStore, sqlite_url

    url = db or sqlite_url(workspace_from(workspace).root)
    store = HubStore(url)
    try:
        yield TokenStore(store)
    finally:
        store.close()


@hub_app.command("migrate")
def migrate(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    status: Annotated[bool, typer.Option("--status", help="Only print the database's revision; change nothing.")]
    = False,
) -> None:
    """Upgrade the hub database to this edgeship's schema ('hub serve' does it at start too). Back it up first."""
    _need_hub_extra()
    from sqlalchemy import create_engine

    from edgeship.hub.store import HubStore, schema, sqlite_url

    url = db or sqlite_url(workspace_from(workspace).root)
    if status:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                found = schema.current_revision(connection) or "none (empty, or made before migrations)"
        finally:
            engine.dispose()
        console.print(f"hub database at revision {found}; this edgeship's newest is {schema.head()}", highlight=False)
        return
    store = HubStore(url)
    store.close()
    if store.upgraded_from == schema.head():
        console.print(f"hub database already at revision {schema.head()}", highlight=False)
    else:
        console.print(f"hub database upgraded from revision {store.upgraded_from} to {schema.head()}",
                      highlight=False)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it); never reused.")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    role: Annotated[str, typer.Option("--role", help="operator (everything) or read-only (GET, and the logs "
                                      "method).")] = "operator",
    expires: Annotated[str | None, typer.Option("--expires", help="30d, 12h or a time with its zone, "
                                                "2027-01-01T00:00:00Z (default: never).", show_default=False)] = None,
) -> None:
    """Create an operator token and print it once (the hub keeps only its sha256)."""
    _need_hub_extra()
    from edgeship.hub.api.auth import create_token, parse_expiry
    from edgeship.hub.store import ROLES

    if role not in ROLES:
        raise InputError(f"Unknown --role {role!r}; use one of: {', '.join(ROLES)}.")
    until = parse_expiry(expires, datetime.now(timezone.utc)) if expires is not None else None
    with _token_store(workspace, db) as tokens:
        token = create_token(tokens.store, name, role=role, expires=until)
    typer.echo(token)


def _token_json(record: TokenRecord, now: datetime) -> dict[str, Any]:
    from edgeship.hub.store.tokens import token_state

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "name": record.name, "role": record.role, "state": token_state(record, now), "created": when(record.created),
        "expires": when(record.expires), "revoked": when(record.revoked_at), "lastUsed": when(record.last_used),
    }


@token_app.command("list")
def token_list(workspace: WorkspaceOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Every operator token: name, role, state, created, expires, revoked, last used (never the token)."""
    now = datetime.now(timezone.utc)
    with _token_store(workspace, db) as tokens:
        rows = [_token_json(record, now) for record in tokens.list()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No operator tokens; create one with 'edgeship hub token create NAME'.", highlight=False)
        return
    table = Table("name", "role", "state", "created", "expires", "revoked", "last used", box=None)
    for row in rows:
        table.add_row(*(_short(row[key]) for key in ("name", "role", "state", "created", "expires", "revoked",
                                                      "lastUsed")))
    console.print(table, highlight=False)


def _short(value: str | None) -> str:
    """An ISO time to the minute (``2026-12-05 07:15Z``), other text as it is, ``-`` for none."""
    if value is None:
        return "-"
    if len(value) >= 16 and value[10:11] == "T":
        return value[:10] + " " + value[11:16] + "Z"
    return value


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name ('edgeship hub token list').")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Revoke a token: its next request is refused (401). The row stays, so 'token list' shows it revoked."""
    with _token_store(workspace, db) as tokens:
        record, changed = tokens.revoke(name, datetime.now(timezone.utc))
    assert record.revoked_at is not None
    if changed:
        console.print(f"Revoked token {name!r} ({record.role}).", highlight=False)
    else:
        console.print(f"Token {name!r} was revoked already, at {_short(record.revoked_at.isoformat())}.",
                      highlight=False)


def parse_module_ref(text: str, *, need_version: bool) -> tuple[str, int | None]:
    """``NAME:VERSION`` (or ``NAME`` when the version may be omitted) -> ``(name, version)``."""
    name, sep, version = text.partition(":")
    example = "digits:3" if need_version else "digits or digits:3"
    if not name or (sep and not version.isdigit()) or (need_version and not sep):
        raise InputError(f"Invalid module {text!r}: write it as {'NAME:VERSION' if need_version else 'NAME[:VERSION]'}"
                         f", e.g. {example}.")
    return name, int(version) if sep else None


@module_app.command("upload")
def module_upload(
    module: Annotated[str, typer.Argument(help="NAME or NAME:VERSION of a module built with 'edgeship package'.")],
    workspace: WorkspaceOpt = None,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a module built with 'edgeship package' to the hub, over HTTP from any machine: the artifacts the hub
    lacks, then the signed envelope; the hub verifies the signature and every artifact before taking it."""
    from edgeship.modules.store import ModuleStore

    name, version = parse_module_ref(module, need_version=False)
    ws = workspace_from(workspace)
    stored = ModuleStore(ws).get(name, version)
    with hub_client(hub, token) as client:
        uploaded = client.upload_module_dir(stored.directory)
    if as_json:
        print_json(uploaded)
        return
    console.print(f"Uploaded {uploaded['name']}:{uploaded['version']} ({uploaded['variant']}, manifest "
                  f"{uploaded['manifestDigest'][:19]}…)", highlight=False)


@trust_app.command("publish")
def trust_root_publish(
    file: Annotated[Path, typer.Argument(help="A rotated trust root from 'edgeship keys trust-root --previous'.")],
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rotate the hub to a new trust root and publish it to every device (ADR 0013).

    The hub checks it rotates from its current root, publishes the whole chain on each
    device's trust-root topic, and re-signs every document if the hub key changed.
    """
    try:
        envelope = file.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read the trust root {file}: {exc.strerror}.") from exc
    with hub_client(hub, token) as client:
        answer = client.publish_trust_root(envelope)
    if as_json:
        print_json(answer)
        return
    console.print(f"Hub and devices rotate to trust root version {answer['version']}; documents are signed by "
                  f"{', '.join(k[:12] for k in answer['hubKeys'])}", highlight=False)


@trust_app.command("show")
def trust_root_show(hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False) -> None:
    """The hub's current trust root version and the chain of rotations devices receive."""
    with hub_client(hub, token) as client:
        answer = client.trust_root()
    if as_json:
        print_json(answer)
        return
    chain = ", ".join(f"v{v}" for v in answer["chain"]) or "none"
    console.print(f"trust root version {answer['version']}; chain published to devices: {chain}", highlight=False)
    for name, role in answer["trustRoot"]["roles"].items():
        console.print(f"  {name}: {role['threshold']} of {len(role['keyids'])}", highlight=False)
