"""Telemetry batches and device presence (online flag, last seen), beside the hub's other tables.

Telemetry is bounded per device: each insert deletes all but the newest
:data:`KEEP_PER_DEVICE` batches of that device in the same transaction, so a chatty
device cannot grow the database without limit. Presence is one row per device,
written by ``online`` messages and touched by every telemetry batch.

Telemetry arrives at least once (the agent re-sends a batch whose PUBACK was lost), so
:meth:`TelemetryStore.add` stores each sample once: a sample whose ``(seq, time)`` one of
the device's kept batches already holds is dropped. Exact pairs, not "seq above the
highest seen": MQTT 5 hub replicas may store a device's batches out of order, and an
agent whose data directory was wiped restarts ``seq`` at 1 with new times.

The samples it stores also go into the per-version history (``history.py``) in the
same transaction, so the history counts what the telemetry table holds, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from edgeship.hub.store import history
from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import Base, DeviceRow

__all__ = ["KEEP_PER_DEVICE", "PresenceRecord", "PresenceRow", "TelemetryRecord", "TelemetryRow", "TelemetryStore"]

KEEP_PER_DEVICE = 100  # telemetry batches kept per device (each holds many samples)

_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)  # parsed as edgeship.hub.telemetry.Sample.time is


def _sample_key(sample: dict[str, Any]) -> tuple[int, datetime]:
    """What identifies a sample across re-sends; times compare as instants, not as strings."""
    return int(sample["seq"]), _TIME.validate_python(sample["time"])


class TelemetryRow(Base):
    """One telemetry batch as the device sent it (validated), with the hub's receive time."""

    __tablename__ = "telemetry"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    received: Mapped[datetime]
    batch: Mapped[dict[str, Any]] = mapped_column(JSON)


class PresenceRow(Base):
    """Whether the device's session is up (its retained ``online`` message) and when it was last heard."""

    __tablename__ = "presence"
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime]


@dataclass(frozen=True)
class TelemetryRecord:
    device_id: str
    received: datetime
    batch: dict[str, Any]


@dataclass(frozen=True)
class PresenceRecord:
    device_id: str
    online: bool
    last_seen: datetime


class TelemetryStore:
    """Telemetry and presence over a :class:`HubStore`'s engine (same transactions, same errors)."""

    def __init__(self, store: StoreBase, keep: int = KEEP_PER_DEVICE) -> None:
        self.store = store
        self.keep = keep

    def add(self, device_id: str, batch: dict[str, Any], received: datetime) -> TelemetryRecord | None:
        """Store a validated batch without the samples already stored, and touch the device's presence.

        The stored samples are added to the device's telemetry history in the same transaction.

        Returns what was stored (the batch with only its new samples), or None when every
        sample was a duplicate: nothing is stored, and the sender is still acknowledged.
        Duplicates are looked for in the device's kept batches only (the newest ``keep``),
        so a re-send older than those is stored again. The device row is locked, so two
        replicas storing the same re-send at once store it once.
        """
        with self.store._tx() as s:
            need(s.get(DeviceRow, device_id, with_for_update=True), f"device {device_id!r}")
            samples: list[dict[str, Any]] = list(batch.get("samples", []))
            seen = {
                _sample_key(sample)
                for stored in s.scalars(select(TelemetryRow.batch).where(TelemetryRow.device_id == device_id))
                for sample in stored.get("samples", [])
            }
            fresh: list[dict[str, Any]] = []
            for sample in samples:
                key = _sample_key(sample)
                if key not in seen:
                    seen.add(key)
                    fresh.append(sample)
            presence = s.get(PresenceRow, device_id)
            if presence is None:
                s.add(PresenceRow(device_id=device_id, online=True, last_seen=received))
            else:
                presence.last_seen = max(presence.last_seen, received)
            if samples and not fresh:
                return None
            if len(fresh) < len(samples):
                batch = {**batch, "samples": fresh}
            history.record(s, device_id, fresh)
            s.add(TelemetryRow(device_id=device_id, received=received, batch=batch))
            s.flush()
            cutoff = s.scalars(
                select(TelemetryRow.id)
                .where(TelemetryRow.device_id == device_id)
                .order_by(TelemetryRow.id.desc())
                .offset(self.keep)
                .limit(1)
            ).first()
            if cutoff is not None:
                s.execute(delete(TelemetryRow).where(TelemetryRow.device_id == device_id, TelemetryRow.id <= cutoff))
            return TelemetryRecord(device_id, received, batch)

    def recent(self, device_id: str, limit: int = 10) -> list[TelemetryRecord]:
        """The device's newest ``limit`` batches, newest first."""
        with self.store._tx() as s:
            need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            rows = s.scalars(
                select(TelemetryRow)
                .where(TelemetryRow.device_id == device_id)
                .order_by(TelemetryRow.id.desc())
                .limit(limit)
            )
            return [TelemetryRecord(r.device_id, r.received, dict(r.batch)) for r in rows]

    def set_online(self, device_id: str, online: bool, when: datetime) -> PresenceRecord:
        """Record the device's ``online`` message. The device row is locked, as in :meth:`add`: two replicas storing
        the first presence of a device at once would otherwise both insert its row (the second one refused)."""
        with self.store._tx() as s:
            need(s.get(DeviceRow, device_id, with_for_update=True), f"device {device_id!r}")
            row = s.get(PresenceRow, device_id)
            if row is None:
                s.add(PresenceRow(device_id=device_id, online=online, last_seen=when))
            else:
                row.online, row.last_seen = online, max(row.last_seen, when)
            return PresenceRecord(device_id, online, when)

    def presence(self, device_ids: Iterable[str] | None = None) -> dict[str, PresenceRecord]:
        query = select(PresenceRow)
        if device_ids is not None:
            query = query.where(PresenceRow.device_id.in_(list(device_ids)))
        with self.store._tx() as s:
            return {r.device_id: PresenceRecord(r.device_id, r.online, r.last_seen) for r in s.scalars(query)}
