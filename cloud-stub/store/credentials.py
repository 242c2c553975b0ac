"""Device broker credentials: a password hash or a certificate serial per device, beside the hub's other tables.

A row is one credential the hub issued. The secret itself never reaches the
database: a password is kept only as hashes, Mosquitto's ``$7$`` one and a bcrypt
one for NATS (``bcrypt_hash``; NULL for passwords issued before revision 0008), a
certificate as its serial and SHA-256 fingerprint. Rows outlive their device (no
foreign key): a deleted device's credentials stay, revoked, as the audit trail and
as the serials a certificate revocation list must name. A device has at most one active
(unrevoked) credential; issuing a new one revokes the old one in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from edgeship.hub.errors import AlreadyExistsError
from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import Base, DeviceRow

__all__ = ["KINDS", "CredentialRecord", "CredentialRow", "CredentialStore"]

KINDS = ("password", "certificate")


class CredentialRow(Base):
    """One issued broker credential; ``revoked`` is set when it is rotated away or its device is deleted."""

    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)  # no foreign key: kept after the device
    kind: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)  # Mosquitto $7$ line (password)
    serial: Mapped[str | None] = mapped_column(String(64), nullable=True)  # decimal (certificate)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 hex of the DER
    created: Mapped[datetime]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    bcrypt_hash: Mapped[str | None] = mapped_column(Text, nullable=True)  # bcrypt $2b$ for NATS; NULL before rev 0008


@dataclass(frozen=True)
class CredentialRecord:
    id: int
    device_id: str
    kind: str
    password_hash: str | None = field(repr=False)
    serial: int | None
    fingerprint: str | None
    created: datetime
    revoked: bool
    revoked_at: datetime | None
    bcrypt_hash: str | None = field(default=None, repr=False)


def _record(row: CredentialRow) -> CredentialRecord:
    return CredentialRecord(
        row.id, row.device_id, row.kind, row.password_hash, int(row.serial) if row.serial else None,
        row.fingerprint, row.created, row.revoked, row.revoked_at, row.bcrypt_hash,
    )


class CredentialStore:
    """Credentials over a :class:`HubStore`'s engine (same transactions, same errors)."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store

    def issue(
        self,
        device_id: str,
        kind: str,
        when: datetime,
        *,
        password_hash: str | None = None,
        bcrypt_hash: str | None = None,
        serial: int | None = None,
        fingerprint: str | None = None,
        replace: bool = False,
    ) -> CredentialRecord:
        """Store a new active credential; with ``replace`` the device's active one is revoked in the same
        transaction, without it an active one is an :class:`AlreadyExistsError`."""
        if kind not in KINDS:
            raise ValueError(f"unknown credential kind {kind!r}")
        with self.store._tx() as s:
            need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            active = CredentialRow.device_id == device_id, CredentialRow.revoked.is_(False)
            if not replace and s.scalars(select(CredentialRow.id).where(*active).limit(1)).first() is not None:
                raise AlreadyExistsError(
                    f"Device {device_id!r} has broker credentials already; rotate them instead."
                )
            s.execute(update(CredentialRow).where(*active).values(revoked=True, revoked_at=when))
            row = CredentialRow(device_id=device_id, kind=kind, password_hash=password_hash, bcrypt_hash=bcrypt_hash,
                                serial=None if serial is None else str(serial), fingerprint=fingerprint,
                                created=when, revoked=False, revoked_at=None)  # fmt: skip
            s.add(row)
            s.flush()
            return _record(row)

    def active(self, device_ids: Iterable[str] | None = None) -> dict[str, CredentialRecord]:
        """The active credential of each device that has one (of ``device_ids``, or all)."""
        query = select(CredentialRow).where(CredentialRow.revoked.is_(False))
        if device_ids is not None:
            query = query.where(CredentialRow.device_id.in_(list(device_ids)))
        with self.store._tx() as s:
            return {row.device_id: _record(row) for row in s.scalars(query.order_by(CredentialRow.id))}

    def history(self, device_id: str) -> list[CredentialRecord]:
        """Every credential the device was ever issued, oldest first (also after it was deleted)."""
        query = select(CredentialRow).where(CredentialRow.device_id == device_id).order_by(CredentialRow.id)
        with self.store._tx() as s:
            return [_record(row) for row in s.scalars(query)]

    def revoked_serials(self) -> list[int]:
        """Serials of every revoked certificate: what the broker's CRL must name."""
        query = select(CredentialRow.serial).where(
            CredentialRow.revoked.is_(True), CredentialRow.kind == "certificate", CredentialRow.serial.is_not(None)
        )
        with self.store._tx() as s:
            return sorted(int(serial) for serial in s.scalars(query) if serial)

    def delete_device(self, device_id: str, when: datetime) -> list[CredentialRecord]:
        """Revoke the device's credentials and delete the device in one transaction; returns what was revoked.

        The database removes the device's documents, reported state, telemetry and
        presence with it (``ON DELETE CASCADE``); the credential rows stay, revoked.
        """
        with self.store._tx() as s:
            need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            active = select(CredentialRow).where(CredentialRow.device_id == device_id,
                                                 CredentialRow.revoked.is_(False))  # fmt: skip
            revoked = list(s.scalars(active))
            for row in revoked:
                row.revoked, row.revoked_at = True, when
            s.flush()
            s.execute(delete(DeviceRow).where(DeviceRow.id == device_id))
            return [_record(row) for row in revoked]
