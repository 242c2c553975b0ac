"""``ManagedBroker``: the hub keeps a Mosquitto's password file and ACL in step with its store, and reloads it.

``edgeship hub serve --broker-config-dir DIR --broker-pid-file FILE``: after every
credential change the hub rewrites ``DIR/passwd`` and ``DIR/acl`` (and ``DIR/crl.pem``
when that file exists, i.e. the TLS listener checks revocations) atomically, then
sends SIGHUP to the pid in ``FILE``; Mosquitto 2 re-reads its password file, ACL
and CRL on SIGHUP. ``DIR/mosquitto.conf`` is the operator's (``edgeship hub
broker-config`` writes it once) and is never touched here.

The hub's own password line is kept from the existing ``passwd`` (so the hub need
not know its password in clear), or made from ``--broker-password`` when there is
none yet. So are the lines of the other hub identities (``hub-<name>``: further hub
processes, each with its own broker user and session, ADR 0015), so one replica's
rewrite never locks another out. A device whose id is reserved for the hub (created
before the reservation) is left out and logged: it never gets a password line. A lock
serialises rewrites and each one reads the whole state inside it, so the last writer
always leaves the newest state on disk.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edgeship.errors import ConfigError, InputError
from edgeship.hub.broker.mosquitto import BrokerUser, hash_password, parse_password_file, write_access_files
from edgeship.mqtt.identity import RESERVED_NAMES, is_hub_identity, validate_hub_identity

__all__ = ["BrokerState", "BrokerSync", "ManagedBroker"]

log = logging.getLogger("edgeship.hub.broker")


@dataclass(frozen=True)
class BrokerState:
    """What the broker must know: every device id and the password hashes of the devices that have one."""

    device_ids: tuple[str, ...]
    password_hashes: Mapping[str, str]
    revoked_serials: tuple[int, ...] = ()
    # For a NATS cluster (nats_reload.ManagedNats): the bcrypt hashes of the active passwords, and the devices whose
    # hash only the operator can give ('broker-config --engine nats --device-passwords'): a password issued before
    # store revision 0008 ($7$ only), or no credential at all.
    bcrypt_hashes: Mapping[str, str] = field(default_factory=dict)
    operator_hashed: frozenset[str] = frozenset()


class BrokerSync(Protocol):
    """What ``DeviceCredentials`` reloads after a change: a Mosquitto folder (``ManagedBroker``) or a NATS cluster's
    users (``nats_reload.ManagedNats``)."""

    def apply(self, read_state: Callable[[], BrokerState]) -> str:
        """Rewrite the broker's logins for ``read_state()`` and reload it: ``"reloaded"`` or ``"written"``, or a
        ``ConfigError`` saying what to do (the files are written)."""


class ManagedBroker:
    """A Mosquitto config folder the hub rewrites, and how to make the broker reload it."""

    def __init__(
        self,
        folder: Path,
        *,
        hub_username: str = "hub",
        hub_password: str | None = None,
        pid_file: Path | None = None,
        crl: Callable[[Iterable[int]], str] | None = None,
    ) -> None:
        try:
            self.hub_username = validate_hub_identity(hub_username)
        except InputError as exc:
            raise ConfigError(f"{exc} Pass such a --broker-username with --broker-config-dir.") from exc
        self.folder = Path(folder)
        self.pid_file = pid_file
        self._crl = crl  # the hub CA's revocation_list, when it has a CA
        self._lock = threading.Lock()
        self._hub_hash = self._hub_line(hub_password)

    def _hub_lines(self) -> dict[str, str]:
        """The hub identities' password hashes in the current ``passwd`` (this hub's and its replicas')."""
        passwd = self.folder / "passwd"
        if not passwd.is_file():
            return {}
        entries = parse_password_file(passwd.read_text(encoding="utf-8"))
        return {name: hashed for name, hashed in entries.items() if is_hub_identity(name)}

    def _hub_line(self, hub_password: str | None) -> str:
        hashed = self._hub_lines().get(self.hub_username)
        if hashed is not None:
            return hashed
        if hub_password:
            return hash_password(hub_password)
        raise ConfigError(
            f"The broker config folder {self.folder} has no password line for the hub user {self.hub_username!r}; "
            "write the folder with 'edgeship hub broker-config -o DIR' first or pass --broker-password."
        )

    def apply(self, read_state: Callable[[], BrokerState]) -> str:
        """Rewrite the files for ``read_state()`` (read under the lock) and reload the broker; returns what
        happened, for the operator.

        ``"reloaded"``, or ``"written"`` when there is no pid file to signal. A broker
        that cannot be signalled raises :class:`ConfigError` after the files are written,
        so a later reload still picks them up.
        """
        if not self.folder.is_dir():
            raise ConfigError(f"The broker config folder {self.folder} does not exist; create it with "
                              "'edgeship hub broker-config -o DIR'.")  # fmt: skip
        with self._lock:
            state = read_state()
            hubs = {**self._hub_lines(), self.hub_username: self._hub_hash}
            reserved = sorted(d for d in set(state.device_ids) if is_hub_identity(d))
            if reserved:
                log.error("devices %s carry a name reserved for the hub (%s) and get no broker login; delete them "
                          "and create them under other ids", ", ".join(reserved), RESERVED_NAMES)  # fmt: skip
            users = [BrokerUser(name, hashed) for name, hashed in sorted(hubs.items())] + [
                BrokerUser(device_id, state.password_hashes.get(device_id))
                for device_id in sorted(set(state.device_ids) - set(reserved))
            ]
            crl_path = self.folder / "crl.pem"
            crl_pem = self._crl(state.revoked_serials) if self._crl is not None and crl_path.exists() else None
            write_access_files(self.folder, users, self.hub_username, crl_pem=crl_pem)
            if self.pid_file is None:
                return "written"
            self._signal()
        return "reloaded"

    def _signal(self) -> None:
        assert self.pid_file is not None
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Cannot read the broker's pid from {self.pid_file} ({exc}); set 'pid_file' in mosquitto.conf "
                "or fix --broker-pid-file, then send the broker SIGHUP."
            ) from exc
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise ConfigError(
                f"Cannot signal the broker (pid {pid} from {self.pid_file}): {exc.strerror}; is Mosquitto running "
                "and this hub allowed to signal it? The new files are written; send it SIGHUP."
            ) from exc
        log.info("reloaded the broker (SIGHUP to pid %d)", pid)
