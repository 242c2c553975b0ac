"""What a rollout's devices did: read from the store, classified, and what an abort falls back to.

:class:`ProgressReader` is the read side of ``Rollouts`` (``services/rollouts.py``): for one
rollout it reads the devices of the waves out, their newest documents and reports, the
health gates' verdicts (``services/health.py``), and classifies each device with the pure
:func:`~edgeship.hub.rollouts.decide.classify`; it also finds each device's last
known-good modules when its wave goes out (:meth:`ProgressReader.fallbacks`) and the
ones layering would not give back after an abort (:meth:`ProgressReader.pins`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from edgeship.hub.rollouts.admission import plan_from_members
from edgeship.hub.rollouts.decide import OUTCOMES, DeviceProgress, Outcome, classify
from edgeship.hub.rollouts.gate_values import GateValues, summarize
from edgeship.hub.rollouts.policy import RolloutPolicy
from edgeship.hub.rollouts.report import WaveView
from edgeship.hub.rollouts.waves import WavePlan
from edgeship.hub.services.health import DeviceHealth, HealthReader, judged
from edgeship.hub.services.rules import parsed_condition
from edgeship.hub.store import (
    DeploymentRecord,
    DeviceRecord,
    HubStore,
    ModuleRefRecord,
    RolloutDeviceRecord,
    RolloutRecord,
    RolloutStore,
)
from edgeship.hub.targeting import Deployment, DeviceFacts, evaluate, select_modules

__all__ = ["Measured", "Progress", "ProgressReader", "runs"]


@dataclass(frozen=True)
class Measured:
    """What the health gates read in one pass: the devices they judged, and for what."""

    health: Mapping[str, DeviceHealth]  # device -> module -> window -> health
    applied: Mapping[str, datetime]  # device -> when it started running the release
    expected: Mapping[str, Mapping[str, int]]  # device -> module -> version
    now: datetime


class Progress:
    """One rollout's devices as the engine sees them at one moment (read-only)."""

    def __init__(self, record: RolloutRecord, policy: RolloutPolicy, plan: WavePlan,
                 outcomes: dict[str, Outcome], running: set[str], rows: Mapping[str, RolloutDeviceRecord],
                 unhealthy: Mapping[str, str], unread: Mapping[int, int] | None = None, *,
                 measured: Measured | None = None) -> None:
        self.record, self.policy, self.plan, self.outcomes, self.running, self.rows = (
            record, policy, plan, outcomes, running, rows)
        self.measured = measured
        self.unhealthy = unhealthy  # device -> the gate it breached, and by how much
        self.unread = unread or {}  # wave -> planned devices, for waves a partial read left out
        self.full = not self.unread

    def gate_values(self) -> tuple[GateValues, ...]:
        """What each gate measures now per wave and module version, from what this read judged."""
        m = self.measured
        if m is None or not self.policy.gates:
            return ()
        return summarize(self.policy.gates, self.plan.waves, m.expected, m.health, m.applied, m.now, self.policy.soak)

    def waves(self, *, completed: bool = False) -> tuple[WaveView, ...]:
        """Each wave by outcome; ``completed`` marks every wave done (the snapshot of a completed rollout)."""
        views = []
        for index, members in enumerate(self.plan.waves):
            counts = dict.fromkeys(OUTCOMES, 0)
            for device in members:
                counts[self.outcomes.get(device, "pending")] += 1
            status: Literal["done", "current", "next"] = (
                "done" if completed or index < self.record.wave else "current" if index == self.record.wave else "next")
            targeted = self.unread.get(index, len(members))
            pending = counts["pending"] + targeted - len(members)
            views.append(WaveView(index + 1, targeted, pending, counts["soaking"], counts["succeeded"],
                                  counts["failed"], counts["refused"], counts["timed-out"], status,
                                  counts["unhealthy"], counts["no-data"]))
        return tuple(views)


class ProgressReader:
    """Reads and classifies one rollout's devices; ``health`` judges the gates (None: gates have no data)."""

    def __init__(self, store: HubStore, table: RolloutStore, *, clock: Callable[[], datetime],
                 health: HealthReader | None = None) -> None:
        self.store = store
        self.table = table
        self.clock = clock
        self.health = health

    def read(self, record: RolloutRecord, *, write: bool, full: bool = True) -> Progress:
        """Classify every reached device; with ``write``, store newcomers, issue sequences and applied times.

        ``full`` False reads only the devices of the waves out (a pass woken by reports, so its
        cost grows with the waves out, not the fleet): no newcomers are looked for, and the
        waves not out yet are counted from the stored plan (:meth:`RolloutStore.wave_sizes`).
        """
        deployment_id = record.deployment_id
        policy = RolloutPolicy.from_dict(record.policy)
        deployment = self.store.get_deployment(deployment_id)
        rows = self.table.devices(deployment_id, None if full else record.wave)
        condition = parsed_condition(deployment.target_condition)
        candidates = self.store.list_devices(None if full else list(rows))
        targeted = {d.id: d for d in candidates if evaluate(condition, DeviceFacts(d.id, d.tags))}
        plan = plan_from_members({d: r.wave for d, r in rows.items()}, record.wave_count)
        newcomers = {d: plan.wave_for_newcomer(deployment_id, d) for d in targeted if d not in rows} if full else {}
        if newcomers and write:
            self.table.add_devices(deployment_id, newcomers, {})
        waves: dict[str, int] = {d: r.wave for d, r in rows.items()} | newcomers
        reached = [d for d in targeted if waves[d] <= record.wave]
        expected = self.expected(deployment, [targeted[d] for d in reached])
        latest = self.store.latest_desired([d for d in reached if d not in rows or rows[d].issued_sequence is None])
        issued = {d: (doc.sequence, doc.issued) for d, doc in latest.items() if deployment_id in doc.deployments}
        reports = self.store.reported(reached)
        now = self.clock()
        health_reasons: dict[str, str] = {}
        applied: dict[str, datetime] = {}  # first seen running now
        answered: dict[str, tuple[int, datetime, datetime | None, bool]] = {}
        for device in reached:
            row = rows.get(device)
            sequence, issued_at = (row.issued_sequence, row.issued_at) if row and row.issued_sequence else \
                issued.get(device, (None, None))
            if sequence is None or issued_at is None or not expected.get(device):
                continue  # not issued the release yet (or it wins no module here): pending
            report = reports.get(device)
            is_running = runs(report.state if report is not None else {}, expected[device])
            applied_at = row.applied_at if row else None
            if is_running and applied_at is None:
                applied_at = applied[device] = now
            answered[device] = (sequence, issued_at, applied_at, is_running)
        judged_applied = {d: a[2] for d, a in answered.items() if a[3] and a[2] is not None}
        health = self.health.read(policy.gates, expected, judged_applied, {d: r.state for d, r in reports.items()},
                                  now) if self.health is not None and policy.gates else {}
        verdicts = judged(policy.gates, health, judged_applied, now, policy.soak)
        outcomes: dict[str, Outcome] = {}
        running = {d for d, a in answered.items() if a[3]}
        for device, (sequence, issued_at, applied_at, is_running) in answered.items():
            report = reports.get(device)
            state = report.state if report is not None else {}
            status = state.get("status")
            status = status if isinstance(status, dict) else {}
            verdict = verdicts.get(device)
            outcomes[device] = classify(DeviceProgress(
                issued_sequence=sequence, issued_at=issued_at.timestamp(),
                reported_sequence=state.get("lastAppliedSequence"), code=status.get("code"),
                running_release=is_running, applied_at=applied_at.timestamp() if applied_at else None,
                reported_at=report.received.timestamp() if report is not None else None,
                health=verdict[0] if verdict else ("no-data" if policy.gates else None),
            ), policy, now.timestamp())
            if verdict and verdict[0] == "breach":
                health_reasons[device] = verdict[1]
        if write:
            self.table.set_issued(deployment_id, {d: v for d, v in issued.items() if d in waves})
            self.table.set_fields(deployment_id, "applied_at", applied)
        current = [[d for d in targeted if waves[d] == i] for i in range(len(plan.waves))]
        rows = dict(rows) | {d: RolloutDeviceRecord(d, w, None, None, None, None, None) for d, w in newcomers.items()}
        for device, (sequence, at) in issued.items():
            if device in rows:
                rows[device] = replace(rows[device], issued_sequence=sequence, issued_at=at)
        sizes = {} if full else self.table.wave_sizes(deployment_id)
        return Progress(record, policy, WavePlan(tuple(tuple(w) for w in current)), outcomes, running, rows,
                        health_reasons, {i: n for i, n in sizes.items() if i > record.wave},
                        measured=Measured(health, judged_applied, expected, now))

    def layered(self, exclude: str | None = None) -> list[Deployment[ModuleRefRecord]]:
        out: list[Deployment[ModuleRefRecord]] = []
        for record in self.store.list_deployments():
            if record.id != exclude:
                out.append(Deployment(record.id, record.priority, record.created,
                                      parsed_condition(record.target_condition), {m.name: m for m in record.modules}))
        return out

    def expected(self, deployment: DeploymentRecord, devices: list[DeviceRecord]) -> dict[str, dict[str, int]]:
        """device -> {module: version} for the modules this deployment wins on it (as issuing decides)."""
        admission = self.table.admission()
        layered = self.layered()
        out: dict[str, dict[str, int]] = {}
        for device in devices:
            active = [d for d in layered if admission.admits(d.id, device.id)]
            selection = select_modules(DeviceFacts(device.id, device.tags), active)
            out[device.id] = {n: s.module.version for n, s in selection.items() if s.deployment_id == deployment.id}
        return out

    def fallbacks(self, deployment_id: str, device_ids: Iterable[str], names: list[str]) -> dict[str, dict[str, Any]]:
        """device -> {module: {version, settings}} each device runs healthily now from another deployment."""
        ids = list(device_ids)
        if not ids:
            return {}
        admission = self.table.admission()
        layered = self.layered(exclude=deployment_id)
        reports = self.store.reported(ids)
        out: dict[str, dict[str, Any]] = {}
        for device in self.store.list_devices(ids):
            state = reports[device.id].state if device.id in reports else {}
            if (state.get("status") or {}).get("code") != 200:
                continue
            active = [d for d in layered if admission.admits(d.id, device.id)]
            selection = select_modules(DeviceFacts(device.id, device.tags), active)
            good = {n: {"version": s.module.version, "settings": dict(s.module.settings)}
                    for n, s in selection.items() if n in names and runs(state, {n: s.module.version})}
            if good:
                out[device.id] = good
        return out

    def pins(self, deployment_id: str, exposed: list[str],
              rows: Mapping[str, RolloutDeviceRecord]) -> dict[str, dict[str, Any]]:
        """The fallbacks that layering without this deployment would not give back."""
        candidates = [d for d in exposed if d in rows and rows[d].fallback]
        if not candidates:
            return {}
        admission = self.table.admission()
        layered = self.layered(exclude=deployment_id)
        pins: dict[str, dict[str, Any]] = {}
        for device in self.store.list_devices(candidates):
            active = [d for d in layered if admission.admits(d.id, device.id)]
            selection = select_modules(DeviceFacts(device.id, device.tags), active)
            missing = {n: p for n, p in (rows[device.id].fallback or {}).items() if n not in selection}
            if missing:
                pins[device.id] = missing
        return pins


def runs(state: Mapping[str, Any], expected: Mapping[str, int]) -> bool:
    """True when the report shows every expected module at its version and running."""
    modules = state.get("modules") or {}
    for name, version in expected.items():
        entry = modules.get(name)
        if not isinstance(entry, dict) or entry.get("version") != version or entry.get("status") != "running":
            return False
    return bool(expected)
