"""``edgeship hub broker-config -o DIR``: Mosquitto's password file, ACL and config for the hub's devices.

Thin: rendering lives in :mod:`edgeship.hub.broker.mosquitto`, certificates in
:mod:`edgeship.hub.broker.ca`. The device list and the password hashes come from the
hub's store (``edgeship device create`` issues them); a Mosquitto-format file
(``--device-passwords``) overrides the store per device. Devices without a hash log in
by certificate; with TLS, revoked device certificates go into ``crl.pem``. A hash for
a device no longer on the hub is left out: its login is revoked.

Each hub process gets its own broker user (``--hub-username hub --hub-username hub-2``,
all with the password of ``--hub-password-file``): the config binds the client id to
the username, so two hub processes under one user would keep closing each other's
session (ADR 0015). A device whose id is reserved for the hub is refused here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeship.cli._common import WorkspaceOpt, console, workspace_from
from edgeship.errors import InputError
from edgeship.fsutil import atomic_write_text

if TYPE_CHECKING:
    from edgeship.hub.broker.mosquitto import TlsListener

__all__ = ["broker_config", "register"]


def register(app: typer.Typer) -> None:
    """Add ``broker-config`` to the ``hub`` group; ``app`` is unused (the group is already on it)."""
    from edgeship.cli.hub import hub_app

    hub_app.command("broker-config")(broker_config)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read the {what} {path} ({exc.strerror}); check the path.") from exc


def broker_config(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for mosquitto.conf, passwd and acl.")],
    hub_password_file: Annotated[
        Path, typer.Option("--hub-password-file", help="File holding the hub's own broker password.")
    ],
    workspace: WorkspaceOpt = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Hub database URL (default: the workspace's hub.db).", show_default=False)
    ] = None,
    hub_username: Annotated[
        list[str] | None,
        typer.Option("--hub-username", help="A hub process's broker user: 'hub' or 'hub-<name>' (repeat, one per "
                     "hub process; all log in with the --hub-password-file password). Default: hub.",
                     show_default=False),
    ] = None,
    device_passwords: Annotated[
        Path | None,
        typer.Option("--device-passwords", help="Device password hashes, 'id:$7$...' lines (mosquitto_passwd); "
                     "they override the hub store's.", show_default=False),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Plain listener port (passwords in clear).")] = 1883,
    bind: Annotated[str, typer.Option("--bind", help="Address of the plain listener.")] = "127.0.0.1",
    no_plain: Annotated[bool, typer.Option("--no-plain", help="Only the TLS listener.")] = False,
    tls_host: Annotated[
        list[str] | None,
        typer.Option("--tls-host", help="Broker host name or IP for the TLS certificate (repeat); turns TLS on "
                     "(with --engine nats: on every node's MQTT, client and route ports; nodes' hosts are added).",
                     show_default=False),
    ] = None,
    tls_port: Annotated[int, typer.Option("--tls-port", help="TLS listener port.")] = 8883,
    ca_dir: Annotated[
        Path | None,
        typer.Option("--ca-dir", help="Hub CA folder (ca.pem, ca.key; created if missing). Default: "
                     "<workspace>/broker-ca.", show_default=False),
    ] = None,
    require_certificate: Annotated[
        bool, typer.Option("--require-certificate", help="TLS clients log in with a hub-CA certificate (CN = id).")
    ] = False,
    run_as: Annotated[
        str | None,
        typer.Option("--run-as", help="User Mosquitto runs as when started by root (must read the files).",
                     show_default=False),
    ] = None,
    persistence_dir: Annotated[
        Path | None,
        typer.Option("--persistence-dir", help="Where Mosquitto keeps sessions and retained messages across "
                     "restarts (default: OUT/data).", show_default=False),
    ] = None,
    autosave_interval: Annotated[
        int, typer.Option("--autosave-interval", help="Seconds between Mosquitto's saves; a SIGKILL of the broker "
                          "loses what arrived since the last one and was not delivered yet (docs/mqtt.md).")
    ] = 30,
    engine: Annotated[
        str, typer.Option("--engine", help="mosquitto (one broker) or nats (a cluster: --nats-node per node; "
                          "docs/scale.md).")
    ] = "mosquitto",
    nats_node: Annotated[
        list[str] | None,
        typer.Option("--nats-node", help="With --engine nats: a cluster node as NAME=HOST or "
                     "NAME=HOST:CLIENT,CLUSTER,MQTT,HTTP ports (repeat, at least 3).", show_default=False),
    ] = None,
    auth_callout: Annotated[
        bool,
        typer.Option("--auth-callout", help="With --engine nats: the nodes ask the hub replicas about every device "
                     "login (the hub binds each device's MQTT client id to its login; needs 'hub serve "
                     "--nats-config-dir OUT --nats-inbound URL'). Writes the hub's key OUT/auth-callout.nk (0600)."),
    ] = False,
) -> None:
    """Write the broker's security config for the hub's devices: Mosquitto's (reload it with SIGHUP) or a NATS
    cluster's (--engine nats)."""
    if engine not in ("mosquitto", "nats"):
        raise InputError(f"Unknown --engine {engine!r}; use mosquitto or nats.")
    if engine == "nats":
        if require_certificate or no_plain or tls_port != 8883:
            raise InputError("--require-certificate, --no-plain and --tls-port are Mosquitto's; with --engine nats "
                             "--tls-host turns TLS on for every node's ports (given by --nats-node), and devices "
                             "log in by password.")  # fmt: skip
        ca = (ca_dir or workspace_from(workspace).root / "broker-ca") if tls_host else None
        _nats(out, hub_password_file, workspace, db, hub_username, device_passwords, nats_node or [],
              tls_host or [], ca, auth_callout=auth_callout)  # fmt: skip
        return
    if auth_callout:
        raise InputError("--auth-callout is for a NATS cluster (--engine nats); Mosquitto binds client ids itself.")
    try:
        from edgeship.hub.broker.mosquitto import (
            BrokerUser,
            MosquittoSettings,
            fleet_users,
            hash_password,
            parse_password_file,
            write_broker_config,
        )
        from edgeship.hub.store import CredentialStore, HubStore, sqlite_url
    except ModuleNotFoundError as exc:
        raise InputError(f"This needs the '{exc.name}' package; install it with pip install 'edgeship[hub]'.") from exc

    ws = workspace_from(workspace)
    hub_password = _read(hub_password_file, "hub password file").strip()
    overrides = parse_password_file(_read(device_passwords, "device password file")) if device_passwords else {}
    store = HubStore(db or sqlite_url(ws.root))
    try:
        device_ids = [device.id for device in store.list_devices()]
        credentials = CredentialStore(store)
        stored = {d: r.password_hash for d, r in credentials.active().items() if r.password_hash is not None}
        revoked = credentials.revoked_serials()
    finally:
        store.close()
    hashes = {**stored, **overrides}
    hub_names = list(dict.fromkeys(hub_username or ["hub"]))
    hubs = [BrokerUser(name, hash_password(hub_password)) for name in hub_names]
    users, dropped = fleet_users(device_ids, hubs, hashes)
    tls = None
    if tls_host:
        tls = _tls_listener(out, ca_dir or ws.root / "broker-ca", tls_host, tls_port, require_certificate, revoked)
    elif require_certificate:
        raise InputError("--require-certificate needs TLS; give the broker's host name with --tls-host.")
    if no_plain and tls is None:
        raise InputError("--no-plain leaves no listener; give --tls-host for a TLS listener.")
    settings = MosquittoSettings(
        port=None if no_plain else port, bind=bind, tls=tls, hub_username=hub_names[0], run_as=run_as,
        persistence_dir=persistence_dir, autosave_interval=autosave_interval,
    )
    files = write_broker_config(out, users, settings)
    devices = users[len(hubs):]
    with_password = sum(1 for user in devices if user.password_hash is not None)
    console.print(
        f"Wrote {files.config}, {files.password_file.name} and {files.acl_file.name} for {len(devices)} devices "
        f"({with_password} by password, {len(devices) - with_password} by certificate only) and the hub user(s) "
        f"{', '.join(hub_names)}.",
        highlight=False,
    )
    if dropped:
        console.print(f"Left out {len(dropped)} password(s) of devices not on the hub: {', '.join(dropped)}.",
                      highlight=False)  # fmt: skip
    console.print("Reload a running broker with: kill -HUP <mosquitto pid>", highlight=False)


def _nats(out: Path, hub_password_file: Path, workspace: Path | None, db: str | None, hub_username: list[str] | None,
          device_passwords: Path | None, nodes: list[str], tls_hosts: list[str],
          ca_dir: Path | None, *, auth_callout: bool = False) -> None:  # fmt: skip
    """``--engine nats``: the hub's devices with the bcrypt hashes of the store or the file, TLS from the hub CA in
    ``ca_dir`` when given (``edgeship.cli.broker_config_nats``)."""
    try:
        from edgeship.cli.broker_config_nats import DeviceHashes, parse_bcrypt_lines, write_nats
        from edgeship.hub.store import CredentialStore, HubStore, sqlite_url
        from edgeship.mqtt.identity import validate_hub_identity
    except ModuleNotFoundError as exc:
        raise InputError(f"This needs the '{exc.name}' package; install it with pip install 'edgeship[hub]'.") from exc

    hub_password = _read(hub_password_file, "hub password file").strip()
    supplied = parse_bcrypt_lines(_read(device_passwords, "device password file")) if device_passwords else {}
    store = HubStore(db or sqlite_url(workspace_from(workspace).root))
    try:
        device_ids = [device.id for device in store.list_devices()]
        hashes = DeviceHashes.from_store(CredentialStore(store).active(), supplied)
    finally:
        store.close()
    hub_names = [validate_hub_identity(name) for name in dict.fromkeys(hub_username or ["hub"])]
    write_nats(out, nodes, device_ids, hub_names, hub_password, hashes, tls_hosts=tls_hosts, ca_dir=ca_dir,
               auth_callout=auth_callout)


def _tls_listener(out: Path, ca_dir: Path, hosts: list[str], port: int, require_certificate: bool,
                  revoked: list[int]) -> TlsListener:  # fmt: skip
    """Load or create the hub CA, issue the broker's server certificate and the CRL into ``out``, describe the
    listener. The running hub (``--broker-config-dir``) rewrites ``crl.pem`` when it revokes a certificate."""
    from edgeship.hub.broker.ca import open_ca, write_server_files
    from edgeship.hub.broker.mosquitto import TlsListener

    ca = open_ca(ca_dir)
    files = write_server_files(out, ca, hosts)
    atomic_write_text(out / "crl.pem", ca.revocation_list(revoked))
    return TlsListener(ca_file=files.ca_file, cert_file=files.cert_file, key_file=files.key_file, port=port,
                       require_certificate=require_certificate, crl_file=out / "crl.pem")  # fmt: skip
