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
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import cast

from edgeship.errors import InputError
from edgeship.hub.errors import HubNotFoundError, RolloutStateError
from edgeship.hub.rollouts.admission import Admission
from edgeship.hub.rollouts.decide import Decision, decide
from edgeship.hub.rollouts.gate_values import GateValues
from edgeship.hub.rollouts.policy import RolloutPolicy
from edgeship.hub.rollouts.report import ACTIVE_STATES, RolloutEvent, RolloutState, RolloutView, WaveView
from edgeship.hub.rollouts.waves import plan_waves
from edgeship.hub.services.health import HealthReader
from edgeship.hub.services.issuing import Issuing
from edgeship.hub.services.rollout_progress import Progress, ProgressReader
from edgeship.hub.services.rules import parsed_condition, validate_deployment_id
from edgeship.hub.store import (
    HubStore,
    ModuleRefRecord,
    RolloutRecord,
    RolloutStart,
    RolloutStore,
)
from edgeship.hub.targeting import DeviceFacts, evaluate

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


class Rollouts:
    """Staged rollouts over the store; ``issuing`` delivers what each transition changes."""

    def __init__(self, store: HubStore, issuing: Issuing, *, clock: Callable[[], datetime],
                 health: HealthReader | None = None, announce: Callable[[str], None] | None = None) -> None:
        """``health`` reads the telemetry the health gates judge (None: gates have no data); ``announce`` tells
        other hub replicas that an operator moved a rollout, so the engine, wherever it runs, looks at once."""
        self.store = store
        self.issuing = issuing
        self.clock = clock
        self.table = RolloutStore(store)
        self.progress = ProgressReader(store, self.table, clock=clock, health=health)
        self._lock = threading.RLock()
        self._idle = False  # no active rollout at the last pass: a pass woken by reports has nothing to do
        self.announce = announce

    # starting -------------------------------------------------------------------------------
    def plan_start(self, deployment_id: str, target_condition: str, modules: Iterable[ModuleRefRecord],
                   policy: RolloutPolicy, actor: str) -> RolloutStart:
        """The waves of a new staged deployment over the devices it targets now, and wave 1's fallbacks."""
        condition = parsed_condition(target_condition)
        devices = [d for d in self.store.list_devices() if evaluate(condition, DeviceFacts(d.id, d.tags))]
        plan = plan_waves(policy, deployment_id, [d.id for d in devices], {d.id: d.tags for d in devices})
        members = {device: index for index, wave in enumerate(plan.waves) for device in wave}
        first = plan.waves[0] if plan.waves else ()
        fallbacks = self.progress.fallbacks(deployment_id, first, [m.name for m in modules])
        sizes = ", ".join(str(len(w)) for w in plan.waves)
        self._idle = False
        return RolloutStart(policy.to_dict(), members, len(plan.waves), fallbacks, actor,
                            f"{len(devices)} targeted device(s) in {len(plan.waves)} wave(s) of {sizes}")

    def changed(self) -> None:
        """A rollout changed on another replica: the next pass, even a light one, reads the rollouts again."""
        self._idle = False

    def tell_replicas(self) -> None:
        """A rollout changed here (committed): the engine looks at once, on whichever replica runs it."""
        if self.announce is not None:
            self.announce("rollouts")

    # the engine -----------------------------------------------------------------------------
    def tick(self, *, full: bool = True) -> int:
        """One pass over every rollout that is rolling out or waiting for approval; returns how many changed state.

        ``full`` False is a pass woken by reports: it reads only the waves out (no newcomers),
        costs nothing when no rollout is active, and reads everything again before a wave
        advances or the rollout completes. The hub runs a full pass at least every
        ``rollout_interval``.
        """
        if not full and self._idle:
            return 0
        active = [r for r in self.table.all() if r.state in ACTIVE_STATES]
        self._idle = not active
        changed = 0
        for record in active:
            try:
                with self._lock:
                    changed += self._step(record.deployment_id, full=full)
            except (HubNotFoundError, RolloutStateError):
                continue  # deleted, or moved by an operator meanwhile: the next tick sees the new state
        if changed:
            self.issuing.drain_pending()
        return changed

    def _step(self, deployment_id: str, *, full: bool = True) -> int:
        record = self.table.get(deployment_id)
        if record is None or record.state not in ACTIVE_STATES:
            return 0
        progress = self.progress.read(record, write=True, full=full)
        now = self.clock()
        decision = decide(progress.policy, progress.plan, record.wave, progress.outcomes,
                          wave_started=record.wave_started.timestamp(), now=now.timestamp())
        if decision.action == "abort":
            self._abort(record, progress, decision, actor=ENGINE)
            return 1
        if record.state == "waiting-approval":
            return 0  # waits for an operator; only an abort moves it on its own
        if decision.action != "wait" and not full:
            return self._step(deployment_id, full=True)  # decide on everything (newcomers too) before moving on
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

    def _advance(self, record: RolloutRecord, progress: Progress, reason: str, actor: str) -> None:
        nxt = record.wave + 1
        if nxt >= len(progress.plan.waves):
            self._finish(record, progress, "completed", "completed", reason, actor)
            return
        members = progress.plan.waves[nxt]
        deployment = self.store.get_deployment(record.deployment_id)
        fallbacks = self.progress.fallbacks(record.deployment_id, members, [m.name for m in deployment.modules])
        self.table.set_fields(record.deployment_id, "fallback", fallbacks)
        self.table.change(
            record.deployment_id, [record.state], state="rolling-out", when=self.clock(), actor=actor,
            action="wave-started", reason=reason, wave=nxt, wave_started=self.clock(),
            detail={"wave": nxt + 1, "devices": len(members)}, reevaluate=members,
        )

    def _finish(self, record: RolloutRecord, progress: Progress, state: RolloutState, action: str, reason: str,
                actor: str) -> None:
        self.table.change(record.deployment_id, LIVE, state=state, when=self.clock(), actor=actor, action=action,
                          reason=reason,
                          detail={"waves": [w.to_dict() for w in progress.waves(completed=state == "completed")]})

    def _abort(self, record: RolloutRecord, progress: Progress, decision: Decision, actor: str) -> None:
        """Stop counting the deployment for anyone; pin last known-good modules layering would not give back."""
        exposed = [d for d, r in progress.rows.items() if r.issued_sequence is not None or r.wave <= record.wave]
        pins = self.progress.pins(record.deployment_id, exposed, progress.rows)
        self.table.change(
            record.deployment_id, (*LIVE, "completed"), state="aborted", when=self.clock(), actor=actor,
            action="aborted", reason=decision.reason, tripped=decision.tripped, pins=pins, reevaluate=exposed,
            detail={"waves": [w.to_dict() for w in progress.waves()], "tripped": list(decision.tripped),
                    "unhealthy": {d: why for d, why in progress.unhealthy.items() if d in decision.tripped},
                    "rolledBack": {d: sorted(f"{m}:{p['version']}" for m, p in mods.items())
                                   for d, mods in pins.items()}},
        )
        log.warning("rollout of %s aborted: %s", record.deployment_id, decision.reason)

    # operators ------------------------------------------------------------------------------
    def pause(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            self._live(deployment_id)
            self.table.change(deployment_id, ["rolling-out", "waiting-approval"], state="paused", when=self.clock(),
                              actor=actor, action="paused", reason=_reason(reason, "paused by an operator"))
        self.tell_replicas()
        return self.show(deployment_id)

    def resume(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            self._live(deployment_id)
            now = self.clock()
            self._idle = False
            self.table.change(deployment_id, ["paused"], state="rolling-out", when=now, actor=actor,
                              action="resumed", reason=_reason(reason, "resumed by an operator"), wave_started=now)
        self.tell_replicas()
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
            progress = self.progress.read(record, write=True)
            self._advance(record, progress, _reason(reason, f"approved by {actor}"), actor)
        self.tell_replicas()
        self.issuing.drain_pending()
        return self.show(deployment_id)

    def abort(self, deployment_id: str, *, actor: str, reason: str | None = None) -> RolloutView:
        with self._lock:
            record = self._live(deployment_id)
            if record.state == "aborted":
                raise RolloutStateError(f"The rollout of {deployment_id!r} is aborted already.")
            progress = self.progress.read(record, write=True)
            self._abort(record, progress, Decision("abort", _reason(reason, f"aborted by {actor}")), actor)
        self.tell_replicas()
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
        return self._view(deployment_id)[0]

    def inspect(self, deployment_id: str) -> tuple[RolloutView, tuple[GateValues, ...]]:
        """``show``, with what each health gate measures now per wave and module version (the numbers the
        engine judges); none once the rollout completed or aborted (its devices are not judged any more)."""
        view, progress = self._view(deployment_id)
        return view, progress.gate_values() if progress is not None else ()

    def _view(self, deployment_id: str) -> tuple[RolloutView, Progress | None]:
        record = self._live(deployment_id)
        events = self.table.events(deployment_id)
        progress: Progress | None = None
        if record.state in ACTIVE_STATES or record.state == "paused":
            progress = self.progress.read(record, write=False)
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
        ), progress

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


def _reason(text: str | None, default: str) -> str:
    if text is None or not text.strip():
        return default
    if len(text) > MAX_REASON or "\x00" in text:
        raise InputError(f"A reason is at most {MAX_REASON} characters of text, without NUL characters.")
    return text.strip()
