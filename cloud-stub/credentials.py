"""Device identity on the hub: each device's broker credentials, issued, rotated and revoked here.

``DeviceCredentials`` sits beside :class:`~edgeship.hub.services.Fleet` and is
called by the same transports (REST routes, CLI through REST). Its invariants:

- a password has 192 random bits (``secrets``), is returned once to the caller and
  is stored only as hashes: Mosquitto's ``$7$`` one and a bcrypt one for a NATS
  cluster (``hub broker-config --engine nats``; ADR 0039); a certificate comes from
  the hub CA (CN = device id), its private key is returned once and never stored;
- no credential is ever issued for a name reserved for the hub (``hub``, ``hub-*``:
  ``edgeship.mqtt.identity``), so a device login never carries the hub's rights;
- a device has at most one active credential: rotation issues the new one and
  revokes the old one in one transaction;
- deleting a device revokes its credentials and removes the device (its documents,
  reports and telemetry with it); the revoked rows stay for audit and the CRL;
- after every change a managed broker gets its new logins and is reloaded, before the
  call returns: a Mosquitto's password file and ACL (``ManagedBroker``) or a NATS
  cluster's ``users.conf`` (``ManagedNats``, ADR 0045).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeship.errors import EdgeshipError, InputError
from edgeship.hub.broker.ca import CertificateAuthority, fingerprint
from edgeship.hub.broker.mosquitto import hash_password
from edgeship.hub.broker.nats import hash_password_bcrypt
from edgeship.hub.broker.reload import BrokerState, BrokerSync
from edgeship.hub.services import DeviceView, Fleet
from edgeship.hub.store import CredentialRecord, CredentialStore
from edgeship.hub.store.credentials import KINDS
from edgeship.mqtt.identity import validate_device_id, validate_new_device_id

__all__ = ["PASSWORD_BYTES", "DeviceCredentials", "IssuedCredentials"]

log = logging.getLogger("edgeship.hub.credentials")

PASSWORD_BYTES = 24  # 192 bits from secrets.token_urlsafe: 32 URL-safe characters


@dataclass(frozen=True)
class IssuedCredentials:
    """What the caller sees once: the broker username (the device id) and the password or certificate + key."""

    device_id: str
    kind: str
    password: str | None = field(default=None, repr=False)
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    ca_pem: str | None = None
    serial: int | None = None
    broker: str = "unmanaged"  # "reloaded", "written", "unmanaged", or why the reload failed

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "username": self.device_id}
        if self.kind == "password":
            body["password"] = self.password
        else:
            body.update(certificate=self.cert_pem, privateKey=self.key_pem, caCertificate=self.ca_pem,
                        serial=str(self.serial))  # fmt: skip
        return body


class DeviceCredentials:
    """Broker credentials of the hub's devices; ``ca`` makes certificates, ``broker`` is reloaded after changes."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        ca: Callable[[], CertificateAuthority] | None = None,
        broker: BrokerSync | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = CredentialStore(fleet.store)
        self._ca = ca
        self.broker = broker

    # the operations ----------------------------------------------------------------------------
    def create_device(
        self, device_id: str, tags: Mapping[str, Any] | None = None, kind: str = "password"
    ) -> tuple[DeviceView, IssuedCredentials]:
        """Create the device (it gets its first document) and its credentials; both or neither."""
        self._check_kind(kind)
        if kind == "certificate":
            assert self._ca is not None
            self._ca()  # a CA that cannot be loaded fails before the device exists
        view = self.fleet.create_device(device_id, tags)
        try:
            issued = self.create_credentials(device_id, kind)
        except BaseException:
            try:
                self.store.delete_device(device_id, self.fleet.clock())
                self.fleet.forget(device_id)
            except EdgeshipError as undo:
                log.error("device %s was created without credentials and could not be removed: %s", device_id, undo)
            raise
        return view, issued

    def create_credentials(self, device_id: str, kind: str = "password") -> IssuedCredentials:
        """First credentials of a device that has none (``AlreadyExistsError`` otherwise: rotate instead).

        Never for a name reserved for the hub (``validate_new_device_id``): a device created
        before the reservation keeps no way to log in with the hub's rights.
        """
        return self._issue(validate_new_device_id(device_id), kind, replace=False)

    def rotate_credentials(self, device_id: str, kind: str | None = None) -> IssuedCredentials:
        """A new secret of the same kind (or ``kind``); the old one is revoked and the broker reloaded."""
        validate_new_device_id(device_id)  # a device named like the hub gets no new login: delete it
        self.fleet.store.get_device(device_id)  # HubNotFoundError for an unknown device
        current = self.store.active([device_id]).get(device_id)
        return self._issue(device_id, kind or (current.kind if current else "password"), replace=True)

    def delete_device(self, device_id: str) -> str:
        """Revoke the device's credentials, delete it, and reload the broker; returns the broker outcome.

        The device leaves every deployment (it is no longer in the store re-evaluation
        reads); its retained messages are cleared through the fleet's device link.
        """
        revoked = self.store.delete_device(validate_device_id(device_id), self.fleet.clock())
        self.fleet.forget(device_id)
        log.info("deleted device %s, revoked %d credential(s)", device_id, len(revoked))
        return self.sync_broker()

    def active(self, device_id: str) -> CredentialRecord | None:
        return self.store.active([validate_device_id(device_id)]).get(device_id)

    def password_hashes(self) -> dict[str, str]:
        """``device id -> $7$ hash`` of every device's active password credential."""
        return {d: r.password_hash for d, r in self.store.active().items() if r.password_hash is not None}

    def broker_state(self) -> BrokerState:
        """Every device, the active password hashes and the revoked certificate serials, as the broker needs them."""
        device_ids = tuple(self.fleet.device_ids())
        active = self.store.active()
        hashes = {d: r.password_hash for d, r in active.items() if r.password_hash is not None}
        bcrypt = {d: r.bcrypt_hash for d, r in active.items() if r.kind == "password" and r.bcrypt_hash}
        # a NATS hash only the operator can give: a password issued before revision 0008, or no credential
        operator = frozenset(d for d in device_ids if d not in active or (active[d].kind == "password"
                                                                          and not active[d].bcrypt_hash))
        return BrokerState(device_ids, hashes, tuple(self.store.revoked_serials()), bcrypt, operator)

    def sync_broker(self) -> str:
        """Rewrite the managed broker's password file and ACL from the store and reload it.

        Returns ``"reloaded"``/``"written"``, ``"unmanaged"`` without a managed broker,
        or the one-sentence reason it failed (the change itself is already stored).
        """
        if self.broker is None:
            return "unmanaged"
        try:
            return self.broker.apply(self.broker_state)
        except EdgeshipError as exc:
            log.error("broker not reloaded: %s", exc)
            return f"failed: {exc}"

    # internals ---------------------------------------------------------------------------------
    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise InputError(f"Credential kind {kind!r} is unknown; use 'password' or 'certificate'.")
        if kind == "certificate" and self._ca is None:
            raise InputError(
                "This hub has no CA to issue device certificates; run it with 'edgeship hub serve' "
                "(the CA lives in <workspace>/broker-ca) or use a password."
            )

    def _issue(self, device_id: str, kind: str, *, replace: bool) -> IssuedCredentials:
        self._check_kind(kind)
        now = self.fleet.clock()
        if kind == "password":
            password = secrets.token_urlsafe(PASSWORD_BYTES)
            self.store.issue(device_id, kind, now, password_hash=hash_password(password),
                             bcrypt_hash=hash_password_bcrypt(password), replace=replace)  # fmt: skip
            issued = IssuedCredentials(device_id, kind, password=password)
        else:
            assert self._ca is not None
            ca = self._ca()
            cert = ca.issue_client(device_id)
            self.store.issue(device_id, kind, now, serial=cert.serial, fingerprint=fingerprint(cert.cert_pem),
                             replace=replace)  # fmt: skip
            issued = IssuedCredentials(device_id, kind, cert_pem=cert.cert_pem, key_pem=cert.key_pem,
                                       ca_pem=ca.cert_pem, serial=cert.serial)  # fmt: skip
        log.info("issued %s credentials for %s", kind, device_id)
        return IssuedCredentials(**{**issued.__dict__, "broker": self.sync_broker()})
