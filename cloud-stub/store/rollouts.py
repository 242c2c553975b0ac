"""Rollout state: one row per staged deployment, one per device it plans, and its events (``docs/rollouts.md``).

A rollout is created in the same transaction as its deployment (:func:`insert_rollout`,
called by ``CatalogTables.add_deployment``), so no device can be issued a staged
deployment before its waves exist. Every state change is one transaction that updates
the rollout row and appends its event, and checks the state it expected first
(:meth:`RolloutStore.change`), so an operator's action and the engine's tick cannot
both move the same rollout from the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from edgeship.hub.errors import HubNotFoundError, RolloutStateError
from edgeship.hub.rollouts.admission import Admission, StagedDeployment, plan_from_members
from edgeship.hub.rollouts.waves import WavePlan
from edgeship.hub.store.engine import StoreBase
from edgeship.hub.store.models import Base, RolloutDeviceRow, RolloutEventRow, RolloutRow
from edgeship.hub.store.outbox import record_intent

__all__ = [
    "RolloutDeviceRecord", "RolloutEventRecord", "RolloutRecord", "RolloutStart", "RolloutStore", "insert_rollout",
]


@dataclass(frozen=True)
class RolloutRecord:
    deployment_id: str
    policy: dict[str, Any]
    state: str
    wave: int  # 0-based: the newest wave out
    wave_count: int  # waves planned at the start
    wave_started: datetime
    reason: str
    tripped: tuple[str, ...]
    started: datetime
    updated: datetime


@dataclass(frozen=True)
class RolloutDeviceRecord:
    device_id: str
    wave: int  # 0-based
    issued_sequence: int | None
    issued_at: datetime | None
    applied_at: datetime | None
    fallback: dict[str, Any] | None
    pinned: dict[str, Any] | None


@dataclass(frozen=True)
class RolloutEventRecord:
    at: datetime
    actor: str
    action: str
    state: str
    reason: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class RolloutStart:
    """A new rollout as the service planned it: stored with its deployment."""

    policy: dict[str, Any]
    members: Mapping[str, int]  # device -> wave (0-based), the devices targeted at the start
    wave_count: int
    fallbacks: Mapping[str, dict[str, Any]]  # device -> last known-good modules of the first wave
    actor: str
    reason: str


def insert_rollout(s: Session, deployment_id: str, start: RolloutStart, *, when: datetime) -> None:
    """Add a rollout, its planned devices and its ``started`` event inside the caller's transaction."""
    policy, members, fallbacks, actor, reason = start.policy, start.members, start.fallbacks, start.actor, start.reason
    s.add(RolloutRow(deployment_id=deployment_id, policy=policy, state="rolling-out", wave=0,
                     wave_count=start.wave_count, wave_started=when,
                     reason="", tripped=[], started=when, updated=when))
    s.flush()
    if members:
        s.execute(insert(Base.metadata.tables["rollout_devices"]), [
            {"deployment_id": deployment_id, "device_id": d, "wave": w, "fallback": fallbacks.get(d)}
            for d, w in members.items()
        ])
    s.add(RolloutEventRow(deployment_id=deployment_id, at=when, actor=actor, action="started", state="rolling-out",
                          reason=reason, detail={"policy": policy}))


def _record(row: RolloutRow) -> RolloutRecord:
    return RolloutRecord(row.deployment_id, dict(row.policy), row.state, row.wave, row.wave_count, row.wave_started,
                         row.reason,
                         tuple(row.tripped or ()), row.started, row.updated)


class RolloutStore:
    """The ``rollouts``, ``rollout_devices`` and ``rollout_events`` tables over a :class:`HubStore`'s engine."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store

    def get(self, deployment_id: str) -> RolloutRecord | None:
        with self.store._tx() as s:
            row = s.get(RolloutRow, deployment_id)
            return None if row is None else _record(row)

    def all(self) -> list[RolloutRecord]:
        with self.store._tx() as s:
            return [_record(r) for r in s.scalars(select(RolloutRow).order_by(RolloutRow.deployment_id))]

    def devices(self, deployment_id: str, max_wave: int | None = None) -> dict[str, RolloutDeviceRecord]:
        """The rollout's devices (those of waves ``0..max_wave`` only, when given)."""
        d = RolloutDeviceRow
        query = select(d.device_id, d.wave, d.issued_sequence, d.issued_at, d.applied_at, d.fallback, d.pinned)
        query = query.where(d.deployment_id == deployment_id)
        if max_wave is not None:
            query = query.where(d.wave <= max_wave)
        with self.store._tx() as s:
            return {
                r.device_id: RolloutDeviceRecord(r.device_id, r.wave, r.issued_sequence, r.issued_at, r.applied_at,
                                                 r.fallback, r.pinned)
                for r in s.execute(query)
            }

    def wave_sizes(self, deployment_id: str) -> dict[int, int]:
        """wave (0-based) -> devices planned or joined in it."""
        d = RolloutDeviceRow
        query = select(d.wave, func.count()).where(d.deployment_id == deployment_id).group_by(d.wave)
        with self.store._tx() as s:
            return {int(wave): int(count) for wave, count in s.execute(query)}

    def waves(self, deployment_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Each rollout's planned devices and their waves: what admission reads for every issuing pass."""
        ids = list(deployment_ids)
        out: dict[str, dict[str, int]] = {i: {} for i in ids}
        if not ids:
            return out
        d = RolloutDeviceRow
        with self.store._tx() as s:
            for r in s.execute(select(d.deployment_id, d.device_id, d.wave).where(d.deployment_id.in_(ids))):
                out[r.deployment_id][r.device_id] = r.wave
        return out

    def pins(self) -> dict[str, dict[str, Any]]:
        """device -> {module: {"version", "settings"}}: last known-good modules re-issued after aborts."""
        d = RolloutDeviceRow
        out: dict[str, dict[str, Any]] = {}
        with self.store._tx() as s:
            for r in s.execute(select(d.device_id, d.pinned).where(d.pinned.is_not(None)).order_by(d.deployment_id)):
                if r.pinned:
                    out.setdefault(r.device_id, {}).update(r.pinned)
        return out

    def add_devices(self, deployment_id: str, waves: Mapping[str, int],
                    fallbacks: Mapping[str, dict[str, Any]]) -> None:
        """Devices that joined the target after the rollout started, with the wave they take."""
        if not waves:
            return
        with self.store._tx() as s:
            known = set(s.scalars(select(RolloutDeviceRow.device_id).where(
                RolloutDeviceRow.deployment_id == deployment_id, RolloutDeviceRow.device_id.in_(list(waves)))))
            rows = [{"deployment_id": deployment_id, "device_id": d, "wave": w, "fallback": fallbacks.get(d)}
                    for d, w in waves.items() if d not in known]
            if rows:
                s.execute(insert(Base.metadata.tables["rollout_devices"]), rows)

    def set_fields(self, deployment_id: str, column: str, values: Mapping[str, Any]) -> None:
        """Set one per-device column (issued_sequence, issued_at, applied_at, fallback, pinned) for many devices."""
        if not values:
            return
        table = Base.metadata.tables["rollout_devices"]
        with self.store._tx() as s:
            s.execute(
                update(table).where(table.c.deployment_id == deployment_id, table.c.device_id == bindparam("b_id"))
                .values({column: bindparam("b_value")}),
                [{"b_id": d, "b_value": v} for d, v in values.items()],
            )

    def set_issued(self, deployment_id: str, issued: Mapping[str, tuple[int, datetime]]) -> None:
        if not issued:
            return
        table = Base.metadata.tables["rollout_devices"]
        with self.store._tx() as s:
            s.execute(
                update(table).where(table.c.deployment_id == deployment_id, table.c.device_id == bindparam("b_id"))
                .values(issued_sequence=bindparam("b_seq"), issued_at=bindparam("b_at")),
                [{"b_id": d, "b_seq": seq, "b_at": at} for d, (seq, at) in issued.items()],
            )

    def change(
        self, deployment_id: str, expected: Iterable[str], *, state: str, when: datetime, actor: str, action: str,
        reason: str, wave: int | None = None, wave_started: datetime | None = None,
        tripped: Iterable[str] | None = None, detail: Mapping[str, Any] | None = None,
        pins: Mapping[str, dict[str, Any]] | None = None, reevaluate: Iterable[str] = (),
    ) -> RolloutRecord:
        """Move a rollout from one of the ``expected`` states to ``state``, with its event, in one transaction.

        :class:`RolloutStateError` (and nothing written) when its state is not one of
        ``expected`` (another actor moved it first). ``pins`` sets the last known-good
        modules re-issued by an abort, and ``reevaluate`` records the re-evaluation intent
        for the devices the change moves (ADR 0019), in the same transaction.
        """
        devices = list(reevaluate)
        allowed = set(expected)
        with self.store._tx() as s:
            row = s.get(RolloutRow, deployment_id, with_for_update=True)
            if row is None:
                raise HubNotFoundError(f"Deployment {deployment_id!r} has no rollout.")
            if row.state not in allowed:
                raise RolloutStateError(
                    f"The rollout of {deployment_id!r} is {row.state}, so it cannot be {action}; "
                    f"that needs it {' or '.join(sorted(allowed))}."
                )
            row.state, row.reason, row.updated = state, reason, when
            if wave is not None:
                row.wave = wave
            if wave_started is not None:
                row.wave_started = wave_started
            if tripped is not None:
                row.tripped = sorted(tripped)
            if pins:
                table = Base.metadata.tables["rollout_devices"]
                s.execute(
                    update(table).where(table.c.deployment_id == deployment_id,
                                        table.c.device_id == bindparam("b_id"))
                    .values(pinned=bindparam("b_pins")),
                    [{"b_id": d, "b_pins": p} for d, p in pins.items()],
                )
            s.add(RolloutEventRow(deployment_id=deployment_id, at=when, actor=actor[:128], action=action,
                                  state=state, reason=reason, detail=dict(detail or {})))
            if devices:
                record_intent(s, f"rollout {deployment_id} {action}", devices, when=when)
            s.flush()
            return _record(row)

    def admission(self) -> Admission:
        """What issuing needs to know of every rollout: states, newest waves, plans, and pinned modules."""
        records = [r for r in self.all() if r.state != "completed"]
        live = [r for r in records if r.state != "aborted"]
        members = self.waves(r.deployment_id for r in live)
        staged = {
            r.deployment_id: StagedDeployment(
                r.deployment_id, r.state, r.wave, plan_from_members(members.get(r.deployment_id, {}), r.wave_count)
            )
            for r in live
        } | {
            r.deployment_id: StagedDeployment(r.deployment_id, r.state, r.wave, WavePlan(()))
            for r in records if r.state == "aborted"
        }
        return Admission(staged, self.pins() if any(r.state == "aborted" for r in records) else {})

    def events(self, deployment_id: str) -> list[RolloutEventRecord]:
        e = RolloutEventRow
        with self.store._tx() as s:
            rows = s.scalars(select(e).where(e.deployment_id == deployment_id).order_by(e.id))
            return [RolloutEventRecord(r.at, r.actor, r.action, r.state, r.reason, dict(r.detail or {})) for r in rows]
