"""The broker's security configuration for Mosquitto 2.x: password file, ACL and ``mosquitto.conf``.

Rendering is pure (text from data); :func:`write_broker_config` writes the three
files atomically, so a broker reloading on SIGHUP never reads half a file. The
isolation rule of ``docs/mqtt.md`` is carried by Mosquitto ``pattern`` lines with
``%u`` (the authenticated username, which is the device id), so the ACL does not
grow with the fleet and a new device needs only a password line or a certificate::

    pattern read  edgeship/v1/devices/%u/desired          (and trust-root, telemetry-stored)
    pattern read  edgeship/v1/devices/%u/commands/#
    pattern write edgeship/v1/devices/%u/reported        (and telemetry, online, responses/#)
    user hub                                             (and every other hub identity, hub-<name>)
    topic readwrite edgeship/v1/devices/#

A login is one identity (ADR 0015): every listener binds the MQTT client id to the
username (``use_username_as_clientid``), and the certificate listener makes the
certificate's common name the username (``use_identity_as_username``), so a client can
take over only its own session, never another device's. The hub's rights go to the
users named ``hub`` or ``hub-<name>`` (``edgeship.mqtt.identity``), one per hub
process, and no device may carry such a name.

Passwords are stored as Mosquitto's ``$7$`` PBKDF2-SHA512 hashes
(``$7$<iterations>$<base64 salt>$<base64 hash>``, the format ``mosquitto_passwd``
writes); the hub keeps only these hashes, never a device's password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.errors import ConfigError, InputError
from edgeship.fsutil import atomic_write_text
from edgeship.mqtt.identity import RESERVED_NAMES, is_hub_identity, validate_device_id, validate_hub_identity
from edgeship.mqtt.topics import TOPIC_ROOT

__all__ = [
    "DEVICE_READ",
    "DEVICE_WRITE",
    "PBKDF2_ITERATIONS",
    "BrokerFiles",
    "BrokerUser",
    "MosquittoSettings",
    "TlsListener",
    "fleet_users",
    "hash_password",
    "hub_usernames",
    "parse_password_file",
    "persistence_location",
    "render_acl",
    "render_mosquitto_conf",
    "render_password_file",
    "verify_password",
    "write_access_files",
    "write_broker_config",
]

PBKDF2_ITERATIONS = 101  # Mosquitto 2.0's own default: every connect pays this, so a reconnect storm does too
_SALT_BYTES = 12  # as mosquitto_passwd
DEVICE_READ = ("desired", "trust-root", "commands/#", "telemetry-stored")
"""Channels a device may subscribe to, under ``edgeship/v1/devices/<its id>/``."""
DEVICE_WRITE = ("reported", "telemetry", "online", "responses/#")
"""Channels a device may publish to, under ``edgeship/v1/devices/<its id>/``."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto's ``$7$`` line for ``password`` (PBKDF2-HMAC-SHA512, 64-byte hash)."""
    if not password:
        raise InputError("A broker password cannot be empty.")
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant-time compare); False for other formats."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, expected = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True)
class BrokerUser:
    """One broker login: a device (username = device id) or a hub process (``hub``, ``hub-<name>``).

    ``password_hash`` is a ``$7$`` line; ``None`` means the user logs in with a
    client certificate only (its CN is the username) and gets no password line.
    Whether a user is a hub follows from its name alone (:attr:`is_hub`).
    """

    username: str
    password_hash: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            validate_device_id(self.username)  # the same syntax as device ids: no '/', '+', '#'
        except InputError as exc:
            raise InputError(f"Broker user {self.username!r} is not usable: {exc}") from exc
        if self.password_hash is not None and not self.password_hash.startswith("$7$"):
            raise InputError(
                f"Broker user {self.username!r} has a password hash that is not Mosquitto's $7$ format; "
                "make it with hash_password()."
            )

    @property
    def is_hub(self) -> bool:
        """A hub identity: the ACL gives it the hub's rights."""
        return is_hub_identity(self.username)


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener with the hub CA; ``require_certificate`` makes devices log in by certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    port: int = 8883
    bind: str = "0.0.0.0"
    require_certificate: bool = False  # True: a client certificate from ca_file is the login (CN = username)
    crl_file: Path | None = None  # revoked device certificates (PEM CRL from the hub CA)


@dataclass(frozen=True)
class MosquittoSettings:
    """What the generated ``mosquitto.conf`` turns on; paths in it are made absolute."""

    port: int | None = 1883  # plain (password) listener; None: TLS only
    bind: str = "127.0.0.1"  # the plain listener sends passwords in clear: keep it local unless told
    tls: TlsListener | None = None
    hub_username: str = "hub"  # the hub identity that must be among the users (others: any hub-<name>)
    # Mosquitto has no per-user queue limit: the hub needs a large one (its default of 1000 dropped
    # acknowledgements at 10,000 devices, docs/mqtt.md), and devices receive little, so it is global.
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 100
    # Bytes of one message's payload; Mosquitto drops a larger one (completing its QoS flow) before any
    # subscriber, the hub included, reads it. Global, so it fits the largest edgeship message: a desired
    # document or trust-root chain (1 MiB); devices may send far less (docs/mqtt.md, ADR 0016).
    message_size_limit: int = 1024 * 1024
    # Persistence (ADR 0019): sessions (the hub's subscriptions and what is queued for it while it is away) and
    # retained messages survive a restart. Mosquitto 2.0 writes them on a clean stop (SIGTERM) and every
    # autosave_interval seconds, after acknowledging the messages it saves: a SIGKILL loses what arrived since the last
    # save and was not yet delivered (measured; docs/mqtt.md says what that means for each channel). Saving rewrites
    # the whole file, so the interval is a trade between that window and the cost with many retained documents.
    persistence: bool = True
    persistence_dir: Path | None = None  # None: <config folder>/data (must be writable by the broker's user)
    autosave_interval: int = 30  # seconds between saves while running
    # Started as root, Mosquitto drops to this user before it reads the password file and ACL, so they
    # must be readable by it (chown them, or run the broker as the user that wrote them). None: its default.
    run_as: str | None = None


def render_password_file(users: Iterable[BrokerUser]) -> str:
    """``username:$7$...`` lines, sorted; certificate-only users get none. Duplicate names are refused."""
    seen: set[str] = set()
    lines: list[str] = []
    for user in sorted(users, key=lambda u: u.username):
        if user.username in seen:
            raise InputError(f"Broker user {user.username!r} is listed twice; keep one entry per device.")
        seen.add(user.username)
        if user.password_hash is not None:
            lines.append(f"{user.username}:{user.password_hash}")
    return "".join(line + "\n" for line in lines)


def _hub_names(hub_usernames: str | Iterable[str]) -> list[str]:
    names = [hub_usernames] if isinstance(hub_usernames, str) else sorted(set(hub_usernames))
    if not names:
        raise InputError("The ACL needs at least one hub user ('hub' or 'hub-<name>'), or no hub can log in.")
    return [validate_hub_identity(name) for name in names]


def render_acl(hub_usernames: str | Iterable[str] = "hub") -> str:
    """The ACL: per-device ``pattern`` rules for every user, and the hub's wide rights for each hub identity.

    Only ``hub``/``hub-<name>`` users may get the hub's rights (InputError otherwise),
    so no device id, which can never be such a name, reaches them.
    """
    hubs = _hub_names(hub_usernames)
    lines = [
        "# edgeship broker ACL (generated; edit the hub's device list instead).",
        "# A device (username = device id) reads only its desired document, trust root and commands and",
        "# writes only its own reported state, telemetry, presence and command responses.",
    ]
    lines += [f"pattern read {TOPIC_ROOT}/%u/{channel}" for channel in DEVICE_READ]
    lines += [f"pattern write {TOPIC_ROOT}/%u/{channel}" for channel in DEVICE_WRITE]
    lines += ["", "# The hub publishes desired documents and commands and reads every device's channels.",
              "# One user per hub process: each has its own session (the client id is the username)."]
    for hub in hubs:
        lines += ["", f"user {hub}", f"topic readwrite {TOPIC_ROOT}/#", "topic read $SYS/#"]
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(settings: MosquittoSettings, password_file: Path, acl_file: Path) -> str:
    """A Mosquitto 2.x config: no anonymous access, password file and ACL for every listener."""
    if settings.port is None and settings.tls is None:
        raise ConfigError("The broker needs a listener; give a plain port, a TLS listener, or both.")
    lines = [
        "# edgeship broker configuration (generated by 'edgeship hub broker-config').",
        *([f"user {settings.run_as}"] if settings.run_as else []),
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {password_file.resolve()}",
        f"acl_file {acl_file.resolve()}",
        f"max_queued_messages {settings.max_queued_messages}",
        f"max_inflight_messages {settings.max_inflight_messages}",
        f"message_size_limit {settings.message_size_limit}",
    ]
    if settings.persistence:
        if settings.autosave_interval < 1:
            raise ConfigError(f"autosave_interval {settings.autosave_interval} must be at least 1 second; Mosquitto "
                              "reads 0 as 'save only on a clean stop', which a SIGKILL would make 'never'.")
        lines += [
            "persistence true",
            f"persistence_location {persistence_location(settings, password_file.parent).resolve()}/",
            f"autosave_interval {settings.autosave_interval}",
            "autosave_on_changes false",
        ]
    else:
        lines.append("persistence false")
    # A login is one identity: the client id is the username (a listener setting in Mosquitto 2.0, ignored
    # before the first 'listener'), so a client that sends another device's id gets its own session instead
    # of closing that device's.
    if settings.port is not None:
        lines += ["", f"listener {settings.port} {settings.bind}", "use_username_as_clientid true"]
    tls = settings.tls
    if tls is not None:
        lines += [
            "",
            f"listener {tls.port} {tls.bind}",
            "use_username_as_clientid true",
            f"cafile {tls.ca_file.resolve()}",
            f"certfile {tls.cert_file.resolve()}",
            f"keyfile {tls.key_file.resolve()}",
            "tls_version tlsv1.2",
        ]
        if tls.require_certificate:
            lines += ["require_certificate true", "use_identity_as_username true"]
        if tls.crl_file is not None:
            lines.append(f"crlfile {tls.crl_file.resolve()}")
    return "\n".join(lines) + "\n"


def persistence_location(settings: MosquittoSettings, folder: Path) -> Path:
    """Where the broker keeps ``mosquitto.db``: ``settings.persistence_dir``, or ``data`` in the config folder."""
    return settings.persistence_dir if settings.persistence_dir is not None else Path(folder) / "data"


def _prepare_persistence(settings: MosquittoSettings, folder: Path) -> None:
    """Create the persistence folder, owned by the user Mosquitto will run as when we are root.

    Started as root, Mosquitto drops to ``run_as`` (default ``mosquitto``) and then cannot
    write a root-owned folder: it keeps running but saves nothing (checked on 2.0.11), which
    a clean restart would silently turn into lost sessions.
    """
    if not settings.persistence:
        return
    location = persistence_location(settings, folder)
    location.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import shutil

        user = settings.run_as or "mosquitto"
        try:
            shutil.chown(location, user=user)
        except LookupError as exc:
            if settings.run_as is not None:
                raise ConfigError(f"The broker's user {user!r} (run_as) does not exist; create it or pick another "
                                  "with --run-as.") from exc


def parse_password_file(text: str) -> dict[str, str]:
    """``username -> $7$ hash`` from a Mosquitto password file (``mosquitto_passwd`` writes one)."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith("$7$"):
            raise InputError(
                f"Password file line {number} is not 'username:$7$...'; write it with mosquitto_passwd "
                "or hash_password()."
            )
        if name in entries:
            raise InputError(f"Password file names {name!r} twice (line {number}); keep one line per user.")
        entries[name] = hashed
    return entries


def fleet_users(
    device_ids: Iterable[str], hub: BrokerUser | Iterable[BrokerUser], password_hashes: dict[str, str]
) -> tuple[list[BrokerUser], list[str]]:
    """Broker users for the hub's devices: a password line where one is known, else certificate-only.

    Returns the users (the hub identities first) and the names in ``password_hashes``
    that are no device of the hub's (deleted devices: leaving them out revokes their
    login). A device whose id is reserved for the hub (created before the reservation)
    is refused: the operator deletes it, which also revokes its certificate.
    """
    hubs = [hub] if isinstance(hub, BrokerUser) else list(hub)
    for user in hubs:
        validate_hub_identity(user.username)
    ids = sorted(set(device_ids))
    reserved = [device_id for device_id in ids if is_hub_identity(device_id)]
    if reserved:
        raise InputError(
            f"Device(s) {', '.join(reserved)} carry a name reserved for the hub's broker identities "
            f"({RESERVED_NAMES}) and would log in with the hub's rights; delete them ('edgeship device delete ID', "
            "which also revokes their certificates) and create them under other ids."
        )
    users = hubs + [BrokerUser(device_id, password_hashes.get(device_id)) for device_id in ids]
    dropped = sorted(set(password_hashes) - set(ids) - {user.username for user in hubs})
    return users, dropped


def hub_usernames(users: Iterable[BrokerUser], required: str = "hub") -> list[str]:
    """The hub identities among ``users`` (they get the hub's rights in the ACL); ``required`` must be one.

    Each hub identity logs in by password: the hub CA issues no certificate for a hub
    name, so a certificate-only hub user could never be the hub.
    """
    validate_hub_identity(required)
    hubs = [user for user in users if user.is_hub]
    if not any(user.username == required for user in hubs):
        raise InputError(f"The broker users lack the hub's user {required!r}; add it, or the hub cannot log in.")
    for user in hubs:
        if user.password_hash is None:
            raise InputError(
                f"The hub's broker user {user.username!r} has no password; hub processes log in by password "
                "(give it one with --hub-password-file)."
            )
    return [user.username for user in hubs]


@dataclass(frozen=True)
class BrokerFiles:
    config: Path
    password_file: Path
    acl_file: Path


def write_broker_config(
    folder: Path, users: Iterable[BrokerUser], settings: MosquittoSettings | None = None
) -> BrokerFiles:
    """Write ``passwd`` (0600), ``acl`` and ``mosquitto.conf`` into ``folder``, each atomically.

    ``settings.hub_username`` must be among ``users``, with a password; every user named
    ``hub``/``hub-<name>`` gets the hub's rights, one identity per hub process. Send the
    broker SIGHUP afterwards to reload.
    """
    settings = settings or MosquittoSettings()
    users = list(users)
    hubs = hub_usernames(users, settings.hub_username)
    folder = Path(folder)
    files = BrokerFiles(folder / "mosquitto.conf", folder / "passwd", folder / "acl")
    passwords = render_password_file(users)
    atomic_write_text(files.password_file, passwords, mode=0o600)
    atomic_write_text(files.acl_file, render_acl(hubs), mode=0o644)
    atomic_write_text(files.config, render_mosquitto_conf(settings, files.password_file, files.acl_file), 0o644)
    _prepare_persistence(settings, folder)
    return files


def write_access_files(
    folder: Path, users: Iterable[BrokerUser], hub_username: str = "hub", *, crl_pem: str | None = None
) -> tuple[Path, ...]:
    """Rewrite only ``passwd`` (0600), ``acl`` and, given ``crl_pem``, ``crl.pem`` in ``folder``, each atomically.

    What the running hub does after every credential change: ``mosquitto.conf`` (listeners,
    TLS) stays as :func:`write_broker_config` or the operator wrote it. SIGHUP the broker after.
    """
    users = list(users)
    hubs = hub_usernames(users, hub_username)
    folder = Path(folder)
    written = [folder / "passwd", folder / "acl"]
    atomic_write_text(written[0], render_password_file(users), mode=0o600)
    atomic_write_text(written[1], render_acl(hubs), mode=0o644)
    if crl_pem is not None:
        written.append(folder / "crl.pem")
        atomic_write_text(written[2], crl_pem, mode=0o644)
    return tuple(written)
