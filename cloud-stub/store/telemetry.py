"""Telemetry batches and device presence (online flag, last seen), beside the hub's other tables.

Telemetry is bounded per device: each store deletes all but the newest
:data:`KEEP_PER_DEVICE` batches of that device in the same transaction, so a chatty
device cannot grow the database without limit. Presence is one row per device,
written by ``online`` messages and touched by every telemetry batch.

Telemetry arrives at least once (the agent re-sends a batch until the hub confirms it,
ADR 0049), so :meth:`TelemetryStore.add_many` stores each sample once: a sample whose
``(seq, time)`` one of the device's kept batches already holds is dropped. Exact pairs,
not "seq above the highest seen": MQTT 5 hub replicas may store a device's batches out
of order, and an agent whose data directory was wiped restarts ``seq`` at 1 with new times.

Only the kept batches that can hold such a pair are read (ADR 0052): each row carries
its samples' lowest and highest ``seq`` (``seq_min``, ``seq_max``, indexed with the
device), and a new batch is compared with the rows whose range overlaps its own. A
duplicate has the same ``seq`` as a stored sample, so it lies in that sample's row's
range: the rows left out cannot hold one, and "duplicate" means exactly what it meant
when every kept batch was read. Rows without a range (written by a hub of revision
0008 beside this one, a batch without samples, or a ``seq`` beyond 64 bits) are always
read. Every sample has a ``seq`` (``edgeship.hub.telemetry`` requires one), so every
stored sample is in a range. A re-send older than the device's kept batches is still
stored again, as before: those batches are gone.

The batches a worker gathered go in together (:meth:`TelemetryStore.add_many`, one
transaction): one transaction per batch, each reading up to 100 kept JSON documents,
held the hub to ~118 batches/s (``benchmarks/fleet/RESULTS.md``). The devices' rows are
locked in id order, so two replicas storing overlapping batches cannot deadlock, and
the same re-send stored by two replicas at once is stored once.

The samples it stores also go into the per-version history (``history.py``) in the
same transaction, so the history counts what the telemetry table holds, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, and_, delete, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from edgeship.hub.store import history
from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import Base, DeviceRow

__all__ = [
    "KEEP_PER_DEVICE",
    "PresenceRecord",
    "PresenceRow",
    "TelemetryRecord",
    "TelemetryRow",
    "TelemetryStore",
    "seq_range",
]

KEEP_PER_DEVICE = 100  # telemetry batches kept per device (each holds many samples)
_CHUNK = 200  # devices per query: three bound parameters each, under SQLite's old bound of 999
_MAX_SEQ = 2**63 - 1  # BIGINT; a seq beyond it (JSON allows it) leaves the row without a range

_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)  # parsed as edgeship.hub.telemetry.Sample.time is


def _sample_key(sample: dict[str, Any]) -> tuple[int, datetime]:
    """What identifies a sample across re-sends; times compare as instants, not as strings."""
    return int(sample["seq"]), _TIME.validate_python(sample["time"])


def seq_range(samples: Iterable[Any]) -> tuple[int, int] | None:
    """The lowest and highest ``seq`` of validated samples, or None without samples or beyond 64 bits."""
    seqs = [int(sample["seq"]) for sample in samples]
    if not seqs or min(seqs) < 0 or max(seqs) > _MAX_SEQ:
        return None
    return min(seqs), max(seqs)


class TelemetryRow(Base):
    """One telemetry batch as the device sent it (validated), with the hub's receive time and its samples' seqs."""

    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_device_seq", "device_id", "seq_max", "seq_min"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    received: Mapped[datetime]
    batch: Mapped[dict[str, Any]] = mapped_column(JSON)
    seq_min: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: always compared (module docstring)
    seq_max: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


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
        """:meth:`add_many` for one batch; a HubNotFoundError for an unknown device."""
        (stored,), unknown = self.add_many([(device_id, batch, received)])
        if unknown:
            need(None, f"device {device_id!r}")
        return stored

    def add_many(
        self, items: Sequence[tuple[str, dict[str, Any], datetime]]
    ) -> tuple[list[TelemetryRecord | None], set[str]]:
        """Store validated batches in one transaction without the samples already stored; touch presence.

        Returns, per item in order, what was stored (the batch with only its new samples), or
        None when every sample was a duplicate (nothing is stored; the sender is still
        confirmed) or the device is unknown; and the unknown devices, which are left out
        rather than failing the others. A device's batches are stored in the order given,
        each compared with the ones before it too. The stored samples are added to the
        device's telemetry history in the same transaction. Duplicates are looked for in the
        device's kept batches only (the newest ``keep``), so a re-send older than those is
        stored again. The device rows are locked in id order, so two replicas storing the
        same re-send at once store it once, and never wait for each other in a cycle.
        """
        results: list[TelemetryRecord | None] = [None] * len(items)
        ids = sorted({device_id for device_id, _, _ in items})
        if not ids:
            return results, set()
        with self.store._tx() as s:
            known: set[str] = set()
            for chunk in _chunks(ids):  # ORDER BY under FOR UPDATE: rows are locked in that order
                known.update(s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(chunk))
                                       .order_by(DeviceRow.id).with_for_update()))
            mine: dict[str, list[int]] = {}
            for i, (device_id, _, _) in enumerate(items):
                if device_id in known:
                    mine.setdefault(device_id, []).append(i)
            seen = self._kept_keys(s, {d: [items[i][1] for i in mine[d]] for d in mine})
            self._touch_presence(s, {d: max(items[i][2] for i in mine[d]) for d in mine})
            for device_id in sorted(mine):
                keys = seen.get(device_id, set())
                stored: list[dict[str, Any]] = []
                for i in mine[device_id]:
                    _, batch, received = items[i]
                    samples: list[dict[str, Any]] = list(batch.get("samples", []))
                    fresh: list[dict[str, Any]] = []
                    for sample in samples:
                        key = _sample_key(sample)
                        if key not in keys:
                            keys.add(key)
                            fresh.append(sample)
                    if samples and not fresh:
                        continue
                    if len(fresh) < len(samples):
                        batch = {**batch, "samples": fresh}
                    stored.extend(fresh)
                    span = seq_range(fresh)
                    s.add(TelemetryRow(device_id=device_id, received=received, batch=batch,
                                       seq_min=span[0] if span else None, seq_max=span[1] if span else None))
                    results[i] = TelemetryRecord(device_id, received, batch)
                history.record(s, device_id, stored)
            s.flush()
            self._prune(s, sorted(d for d in mine if any(results[i] is not None for i in mine[d])))
        return results, set(ids) - known

    def _kept_keys(self, s: Session, batches: dict[str, list[dict[str, Any]]]) -> dict[str, set[tuple[int, datetime]]]:
        """The ``(seq, time)`` of every sample in the kept rows whose seq range overlaps the devices' new batches."""
        wanted: dict[str, tuple[int, int]] = {}
        for device_id, sent in batches.items():
            seqs = [int(sample["seq"]) for batch in sent for sample in batch.get("samples", [])]
            if seqs:  # clamped into BIGINT: a bound beyond it matches what it would (rows with a range are within it)
                wanted[device_id] = (min(max(min(seqs), 0), _MAX_SEQ), min(max(max(seqs), 0), _MAX_SEQ))
        t = TelemetryRow
        seen: dict[str, set[tuple[int, datetime]]] = {}
        for chunk in _chunks(wanted):
            overlapping = or_(*(and_(t.device_id == d, or_(t.seq_min.is_(None), t.seq_max.is_(None),
                                                           and_(t.seq_min <= wanted[d][1], t.seq_max >= wanted[d][0])))
                                for d in chunk))
            for device_id, stored in s.execute(select(t.device_id, t.batch).where(overlapping)):
                seen.setdefault(device_id, set()).update(_sample_key(sample) for sample in stored.get("samples", []))
        return seen

    @staticmethod
    def _touch_presence(s: Session, received: dict[str, datetime]) -> None:
        for chunk in _chunks(received):
            rows = {r.device_id: r for r in s.scalars(select(PresenceRow).where(PresenceRow.device_id.in_(chunk)))}
            for device_id in chunk:
                row = rows.get(device_id)
                if row is None:
                    s.add(PresenceRow(device_id=device_id, online=True, last_seen=received[device_id]))
                else:
                    row.last_seen = max(row.last_seen, received[device_id])

    def _prune(self, s: Session, device_ids: list[str]) -> None:
        """Delete all but each device's newest ``keep`` batches: per chunk, one ranking query and one delete.

        The ranking costs about 0.2 ms per device on SQLite, as a query per device does; for one device
        (a worker that keeps up, :meth:`add`) that query is five times cheaper than the ranking, so it is used.
        """
        t = TelemetryRow
        for chunk in _chunks(device_ids):
            cutoffs: list[tuple[str, int]] = []  # (device, its newest batch to delete)
            if len(chunk) == 1:
                cutoff = s.scalars(select(t.id).where(t.device_id == chunk[0]).order_by(t.id.desc())
                                   .offset(self.keep).limit(1)).first()
                cutoffs = [] if cutoff is None else [(chunk[0], cutoff)]
            else:
                ranked = select(t.device_id, t.id, func.row_number().over(
                    partition_by=t.device_id, order_by=t.id.desc()).label("newer")).where(t.device_id.in_(chunk))
                r = ranked.subquery()
                rows = s.execute(select(r.c.device_id, r.c.id).where(r.c.newer == self.keep + 1))
                cutoffs = [(device_id, cutoff) for device_id, cutoff in rows]
            if cutoffs:
                s.execute(delete(t).where(or_(*(and_(t.device_id == d, t.id <= cutoff) for d, cutoff in cutoffs))))

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
        """Record the device's ``online`` message. The device row is locked, as in :meth:`add_many`: two replicas
        storing the first presence of a device at once would otherwise both insert its row (the second one refused)."""
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


def _chunks(device_ids: Iterable[str]) -> Iterator[list[str]]:
    ids = sorted(device_ids)
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]
