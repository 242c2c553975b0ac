"""``Rollouts``: staged rollouts of deployments — the engine's step, operator actions, and what ``show`` says.

A staged deployment is created with its waves (:meth:`Rollouts.plan_start`, stored with
the deployment in one transaction). From then on the deployment counts in layering only
for devices whose wave is out (``edgeship.hub.rollouts.admission``, read by
:class:`~edgeship.hub.services.issuing.Issuing`). :meth:`Rollouts.tick` — run by the hub on
a timer and whenever reports arrive — reads each active rollout's devices and reports,
classifies them and asks the pure :func:`~edgeship.hub.rollouts.decide.decide` what to do:

- *advance*: the next wave's last known-good modules are captured, the wave goes out
  (state, event and re-evaluation intent in one transaction), and its devices are issued;
- *complete* / *waiting-approval*: the state changes, with the reason;
- *abort*: the deployment stops counting for anyone, every device it reached is re-issued
  what layering gives it without it, and where that leaves a device without a module it
  ran healthily before, that last known-good module is pinned for it (``rolledBack``).

Every state change is one transaction with its event and, when devices must change,
its re-evaluation intent (ADR 0019), so a hub killed at any point resumes in the same
phase and finishes the delivery at its next start. Operator actions (pause, resume,
approve, abort) go through the same transitions, under the same lock as the tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, cast

from edgeship.errors import InputError
from edgeship.hub.errors import HubNotFoundError, RolloutStateError
from edgeship.hub.rollouts.admission import Admission, plan_from_members
from edgeship.hub.rollouts.decide import OUTCOMES, Decision, DeviceProgress, Outcome, classify, decide
from edgeship.hub.rollouts.policy import RolloutPolicy
from edgeship.hub.rollouts.report import ACTIVE_STATES, RolloutEvent, RolloutState, RolloutView, WaveView
from edgeship.hub.rollouts.waves import WavePlan, plan_waves
from edgeship.hub.services.health import HealthReader
from edgeship.hub.services.issuing import Issuing
from edgeship.hub.services.rules import parsed_condition, validate_deployment_id
from edgeship.hub.store import (
    DeploymentRecord,
    DeviceRecord,
    HubStore,
    ModuleRefRecord,
    RolloutDeviceRecord,
    RolloutRecord,
    RolloutStart,
    RolloutStore,
)
from edgeship.hub.targeting import Deployment, DeviceFacts, evaluate, select_modules

__all__ = ["Rollouts", "Wakeup"]

log = logging.getLogger("edgeship.hub.rollouts")

ENGINE = "hub"  # the actor of the engine's own transitions
MAX_REASON = 1024
LIVE: tuple[str, ...] = ("rolling-out", "paused", "waiting-approval")


class Wakeup:
    """Wakes the rollout engine early: the bridge's worker sets it after storing reports."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken


class _Progress:
    """One rollout's devices as the engine sees them at one moment (read-only)."""

    def __init__(self, record: RolloutRecord, policy: RolloutPolicy, plan: WavePlan,
                 outcomes: dict[str, Outcome], running: set[str], rows: Mapping[str, RolloutDeviceRecord],
                 unhealthy: Mapping[str, str]) -> None:
        self.record, self.policy, self.plan, self.outcomes, self.running, self.rows = (
            record, policy, plan, outcomes, running, rows)
        self.unhealthy = unhealthy  # device -> the gate it breached, and by how much

    def waves(self, *, completed: bool = False) -> tuple[WaveView, ...]:
        """Each wave by outcome; ``completed`` marks every wave done (the snapshot of a completed rollout)."""
        views = []
        for index, members in enumerate(self.plan.waves):
            counts = dict.fromkeys(OUTCOMES, 0)
            for device in members:
                counts[self.outcomes.get(device, "pending")] += 1
            status: Literal["done", "current", "next"] = (
                "done" if completed or index < self.record.wave else "current" if index == self.record.wave else "next")
            views.append(WaveView(index + 1, len(members), counts["pending"], counts["soaking"], counts["succeeded"],
                                  counts["failed"], counts["refused"], counts["timed-out"], status,
                                  counts["unhealthy"], counts["no-data"]))
        return tuple(views)


class Rollouts:
    """Staged rollouts over the store; ``issuing`` delivers what each transition changes."""

    def __init__(self, store: HubStore, issuing: Issuing, *, clock: Callable[[], datetime],
                 health: HealthReader | None = None) -> None:
        """``health`` reads the telemetry the health gates judge (None: gates have no data)."""
        self.store = store
        self.issuing = issuing
        self.clock = clock
        self.health = health
        self.table = RolloutStore(store)
        self._lock = threading.RLock()

    # starting -------------------------------------------------------------------------------
    def plan_start(self, deployment_id: str, target_condition: str, modules: Iterable[ModuleRefRecord],
                   policy: RolloutPolicy, actor: str) -> RolloutStart:
        """The waves of a new staged deployment over the devices it targets now, and wave 1's fallbacks."""
        condition = parsed_condition(target_condition)
        devices = [d for d in self.store.list_devices() if evaluate(condition, DeviceFacts(d.id, d.tags))]
        plan = plan_waves(policy, deployment_id, [d.id for d in devices], {d.id: d.tags for d in devices})
        members = {device: index for index, wave in enumerate(plan.waves) for device in wave}
        first = plan.waves[0] if plan.waves else ()
        fallbacks = self._fallbacks(deployment_id, first, [m.name for m in modules])
        sizes = ", ".join(str(len(w)) for w in plan.waves)
        return RolloutStart(policy.to_dict(), members, len(plan.waves), fallbacks, actor,
                            f"{len(devices)} targeted device(s) in {len(plan.waves)} wave(s) of {sizes}")

    # the engine -----------------------------------------------------------------------------
    def tick(self) -> int:
        """One pass over every rollout that is rolling out or waiting for approval; returns how many changed state."""
        changed = 0
        for record in self.table.all():
            if record.state not in ACTIVE_STATES:
                continue
            try:
                with self._lock:
                    changed += self._step(record.deployment_id)
            except (HubNotFoundError, RolloutStateError):
                continue  # deleted, or moved by an operator meanwhile: the next tick sees the new state
        if changed:
            self.issuing.drain_pending()
        return changed

    def _step(self, deployment_id: str) -> int:
        record = self.table.get(deployment_id)
        if record is None or record.state not in ACTIVE_STATES:
            return 0
        progress = self._progress(record, write=True)
        now = self.clock()
        decision = decide(progress.policy, progress.plan, record.wave, progress.outcomes,
                          wave_started=record.wave_started.timestamp(), now=now.timestamp())
        if decision.action == "abort":
            self._abort(record, progress, decision, actor=ENGINE)
            return 1
        if record.state == "waiting-approval":
            return 0  # waits for an operator; only an abort moves it on its own
        if decision.action == "advance":
            self._advance(record, progress, decision.reason, actor=ENGINE)
            return 1
        if decision.action == "complete":
            self._finish(record, progress, "completed", "completed", decision.reason, ENGINE)
            return 1
        if decision.action == "waiting-approval":
            self.table.change(deployment_id, ["rolling-out"], state="waiting-approval", when=now, actor=ENGINE,
                              action="waiting-approval", reason=decision.reason)
            return 1
        return 0

    def _advance(self, record: RolloutRecord, progress: _Progress, reason: str, actor: str) -> None:
        nxt = record.wave + 1
        if nxt >= len(progress.plan.waves):
            self._finish(record, progress, "completed", "completed", reason, actor)
            return
        members = progress.plan.waves[nxt]
        deployment = self.store.get_deployment(record.deployment_id)
        fallbacks = self._fallbacks(record.deployment_id, members, [m.name for m in deployment.modules])
        self.table.set_fields(record.deployment_id, "fallback", fallbacks)
        self.table.change(
            record.deployment_id, [record.state], state="rolling-out", when=self.clock(), actor=actor,
            action="wave-started", reason=reason, wave=nxt, wave_started=self.clock(),
            detail={"wave": nxt + 1, "devices": len(members)}, reevaluate=members,
        )

    def _finish(self, record: RolloutRecord, progress: _Progress, state: RolloutState, action: str, reason: str,
                actor: str) -> None:
        self.table.change(record.deployment_id, LIVE, state=state, when=self.clock(), actor=actor, action=action,
                          reason=reason,
                          detail={"waves": [w.to_dict() for w in progress.waves(completed=state == "completed")]})

    def _abort(self, record: RolloutRecord, progress: _Progress, decision: Decision, actor: str) -> None:
        """Stop counting the deployment for anyone; pin last known-good modules layering would not give back."""
        exposed = [d for d, r in progress.rows.items() if r.issued_sequence is not None or r.wave <= record.wave]
        pins = self._pins(record.deployment_id, exposed, progress.rows)
        self.table.change(
            record.deployment_id, (*LIVE, "completed"), state="aborted", when=self.clock(), actor=actor,
            action="aborted", reason=decision.reason, tripped=decision.tripped, pins=pins, reevaluate=exposed,
            detail={"waves": [w.to_dict() for w in progress.waves()], "tripped": list(decision.tripped),
                    "unhealthy": {d: why for d, why in progress.unhealthy.items() if d in decision.tripped},
                    "rolledBack": {d: sorted(f"{m}:{p['version']}" for m, p in mods.items())
                                   for d, mods in pins.items()}},
        )
        log.warning("rollout of %s aborted: %s", record.deployment_id, decision.reason)

    # what devices did ------------------------------------------------------------------------
    def _progress(self, record: RolloutRecord, *, write: bool) -> _Progress:
        """Classify every reached device; with ``write``, store newcomers, issue sequences and applied times."""
        deployment_id = record.deployment_id
        policy = RolloutPolicy.from_dict(record.policy)
        deployment = self.store.get_deployment(deployment_id)
        rows = self.table.devices(deployment_id)
        condition = parsed_condition(deployment.target_condition)
        targeted = {d.id: d for d in self.store.list_devices() if evaluate(condition, DeviceFacts(d.id, d.tags))}
        plan = plan_from_members({d: r.wave for d, r in rows.items()}, record.wave_count)
        newcomers = {d: plan.wave_for_newcomer(deployment_id, d) for d in targeted if d not in rows}
        if newcomers and write:
            self.table.add_devices(deployment_id, newcomers, {})
        waves: dict[str, int] = {d: r.wave for d, r in rows.items()} | newcomers
        reached = [d for d in targeted if waves[d] <= record.wave]
        expected = self._expected(deployment, [targeted[d] for d in reached])
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
            is_running = _runs(report.state if report is not None else {}, expected[device])
            applied_at = row.applied_at if row else None
            if is_running and applied_at is None:
                applied_at = applied[device] = now
            answered[device] = (sequence, issued_at, applied_at, is_running)
        verdicts = self.health.verdicts(
            policy.gates, expected, {d: a[2] for d, a in answered.items() if a[3] and a[2] is not None},
            {d: r.state for d, r in reports.items()}, now,
        ) if self.health is not None and policy.gates else {}
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
        return _Progress(record, policy, WavePlan(tuple(tuple(w) for w in current)), outcomes, running, rows,
                         health_reasons)

    def _layered(self, exclude: str | None = None) -> list[Deployment[ModuleRefRecord]]:
        out: list[Deployment[ModuleRefRecord]] = []
        for record in self.store.list_deployments():
            if record.id != exclude:
                out.append(Deployment(record.id, record.priority, record.created,
                                      parsed_condition(record.target_condition), {m.name: m for m in record.modules}))
        return out

    def _expected(self, deployment: DeploymentRecord, devices: list[DeviceRecord]) -> dict[str, dict[str, int]]:
        """device -> {module: version} for the modules this deployment wins on it (as issuing decides)."""
        admission = self.table.admission()
        layered = self._layered()
        out: dict[str, dict[str, int]] = {}
        for device in devices:
            active = [d for d in layered if admission.admits(d.id, device.id)]
            selection = select_modules(DeviceFacts(device.id, device.tags), active)
            out[device.id] = {n: s.module.version for n, s in selection.items() if s.deployment_id == deployment.id}
        return out

    def _fallbacks(self, deployment_id: str, device_ids: Iterable[str], names: list[str]) -> dict[str, dict[str, Any]]:
        """device -> {module: {version, settings}} each device runs healthily now from another deployment."""
        ids = list(device_ids)
        if not ids:
            return {}
        admission = self.table.admission()
        layered = self._layered(exclude=deployment_id)
        reports = self.store.reported(ids)
        out: dict[str, dict[str, Any]] = {}
        for device in self.store.list_devices(ids):
            state = reports[device.id].state if device.id in reports else {}
            if (state.get("status") or {}).get("code") != 200:
                continue
            active = [d for d in layered if admission.admits(d.id, device.id)]
            selection = select_modules(DeviceFacts(device.id, device.tags), active)
            good = {n: {"version": s.module.version, "settings": dict(s.module.settings)}
                    for n, s in selection.items() if n in names and _runs(state, {n: s.module.version})}
            if good:
                out[device.id] = good
        return out

    def _pins(self, deployment_id: str, exposed: list[str],
              rows: Mapping[str, RolloutDeviceRecord]) -> dict[str, dict[str, Any]]:
        """The fallbacks that layering without this deployment would not give back."""
        candidates = [d for d in exposed if d in rows and rows[d].fallback]
        if not candidates:
            return {}
        admission = self.table.admission()
        layered = self._layered(exclude=deployment_id)
        pins: dict[str, dict[str, Any]] = {}
        for device in self.store.list_devices(candidates):
            active = [d for d in layered if admission.admits(d.id, device.id)]
            selection = select_modules(DeviceFacts(device.id, device.tags), active)
            missing = {n: p for n, p in (rows[device.id].fallback or {}).items() if n not in selection}
            if missing:
                pins[device.id] = missing
        return pins

    # operators ------------------------------------------------------------------------------
    def pause(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            self._live(deployment_id)
            self.table.change(deployment_id, ["rolling-out", "waiting-approval"], state="paused", when=self.clock(),
                              actor=actor, action="paused", reason=_reason(reason, "paused by an operator"))
        return self.show(deployment_id)

    def resume(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            self._live(deployment_id)
            now = self.clock()
            self.table.change(deployment_id, ["paused"], state="rolling-out", when=now, actor=actor,
                              action="resumed", reason=_reason(reason, "resumed by an operator"), wave_started=now)
        self.tick()
        return self.show(deployment_id)

    def approve(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            record = self._live(deployment_id)
            if record.state != "waiting-approval":
                raise RolloutStateError(
                    f"The rollout of {deployment_id!r} is {record.state} and waits for no approval; approve it "
                    "when 'deployment show' says it is waiting-approval."
                )
            progress = self._progress(record, write=True)
            self._advance(record, progress, _reason(reason, f"approved by {actor}"), actor)
        self.issuing.drain_pending()
        return self.show(deployment_id)

    def abort(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            record = self._live(deployment_id)
            if record.state == "aborted":
                raise RolloutStateError(f"The rollout of {deployment_id!r} is aborted already.")
            progress = self._progress(record, write=True)
            self._abort(record, progress, Decision("abort", _reason(reason, f"aborted by {actor}")), actor)
        self.issuing.drain_pending()
        return self.show(deployment_id)

    def _live(self, deployment_id: str) -> RolloutRecord:
        record = self.table.get(validate_deployment_id(deployment_id))
        if record is None:
            self.store.get_deployment(deployment_id)  # HubNotFoundError for no deployment at all
            raise HubNotFoundError(
                f"Deployment {deployment_id!r} has no rollout: it went to every targeted device at once."
            )
        return record

    # reading --------------------------------------------------------------------------------
    def show(self, deployment_id: str) -> RolloutView:
        record = self._live(deployment_id)
        events = self.table.events(deployment_id)
        if record.state in ACTIVE_STATES or record.state == "paused":
            progress = self._progress(record, write=False)
            waves = progress.waves()
            now = self.clock().timestamp()
            decision = decide(progress.policy, progress.plan, record.wave, progress.outcomes,
                              wave_started=record.wave_started.timestamp(), now=now)
            waiting = {"paused": "resume ('deployment resume')",
                       "waiting-approval": "approval ('deployment approve') or abort"}.get(record.state,
                                                                                         decision.reason)
        else:
            final = next((e for e in reversed(events) if e.action in ("completed", "aborted")), None)
            waves = tuple(WaveView(w["wave"], w["targeted"], w["pending"], w["soaking"], w["succeeded"], w["failed"],
                                   w["refused"], w["timedOut"], w["status"], w.get("unhealthy", 0), w.get("noData", 0))
                          for w in (final.detail.get("waves", []) if final else []))
            waiting = ""
        rows = self.table.devices(deployment_id)
        rolled_back = {d: tuple(sorted(f"{m}:{p['version']}" for m, p in r.pinned.items()))
                       for d, r in rows.items() if r.pinned}
        return RolloutView(
            deployment_id, cast(RolloutState, record.state), record.wave + 1, waves, record.policy, waiting,
            record.reason, record.started, record.updated, record.tripped, rolled_back,
        )

    def events(self, deployment_id: str) -> list[RolloutEvent]:
        self._live(deployment_id)
        return [RolloutEvent(e.at, e.actor, e.action, cast(RolloutState, e.state), e.reason, e.detail)
                for e in self.table.events(deployment_id)]

    def members(self, deployment_id: str) -> dict[str, int]:
        """device -> its wave (1-based), for the devices the rollout planned or saw join."""
        self._live(deployment_id)
        return {d: r.wave + 1 for d, r in self.table.devices(deployment_id).items()}

    def admission(self) -> Admission:
        return self.table.admission()

    def held(self, deployment_id: str) -> Callable[[str], str | None]:
        """For the deployment's status: why its rollout does not let it count for a device (None: it counts)."""
        admission = self.table.admission()
        staged = admission.staged.get(deployment_id)
        if staged is None or staged.state == "completed":
            return lambda _device: None
        if staged.state == "aborted":
            return lambda _device: "the rollout aborted"

        def why(device: str) -> str | None:
            if admission.admits(deployment_id, device):
                return None
            return f"waiting for wave {staged.plan.wave_for_newcomer(deployment_id, device) + 1}"

        return why


def _runs(state: Mapping[str, Any], expected: Mapping[str, int]) -> bool:
    """True when the report shows every expected module at its version and running."""
    modules = state.get("modules") or {}
    for name, version in expected.items():
        entry = modules.get(name)
        if not isinstance(entry, dict) or entry.get("version") != version or entry.get("status") != "running":
            return False
    return bool(expected)


def _reason(text: str | None, default: str) -> str:
    if text is None or not text.strip():
        return default
    if len(text) > MAX_REASON or "\x00" in text:
        raise InputError(f"A reason is at most {MAX_REASON} characters of text, without NUL characters.")
    return text.strip()
