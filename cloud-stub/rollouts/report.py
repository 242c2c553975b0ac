"""What ``deployment show`` and ``deployment events`` say about a rollout: plain records and their JSON.

Built by the rollout service from the stored state and the pure :func:`~edgeship.hub.rollouts.decide.classify`;
REST returns :meth:`RolloutView.to_dict` and :meth:`RolloutEvent.to_dict` as they are,
and the CLI renders the same JSON, so the three never disagree.

States: ``rolling-out``, ``paused``, ``waiting-approval``, ``completed``, ``aborted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["ACTIVE_STATES", "STATES", "RolloutEvent", "RolloutState", "RolloutView", "WaveView"]

RolloutState = Literal["rolling-out", "paused", "waiting-approval", "completed", "aborted"]
STATES: tuple[RolloutState, ...] = ("rolling-out", "paused", "waiting-approval", "completed", "aborted")
ACTIVE_STATES: frozenset[str] = frozenset({"rolling-out", "waiting-approval"})  # the engine looks at these


@dataclass(frozen=True)
class WaveView:
    """One wave's devices by outcome; ``targeted`` counts the wave's devices the target condition still matches."""

    wave: int  # 1-based
    targeted: int
    pending: int = 0  # reached, no answer yet (or not reached: the wave has not started)
    soaking: int = 0  # applied, running the release for less than the soak time
    succeeded: int = 0
    failed: int = 0
    refused: int = 0
    timed_out: int = 0
    status: Literal["done", "current", "next"] = "next"
    unhealthy: int = 0  # a health gate breached (issue 15)
    no_data: int = 0  # soaked, but a gate had too little data to judge: never counted healthy

    @property
    def applied(self) -> int:
        """Devices running the release (soaking or succeeded)."""
        return self.soaking + self.succeeded

    def to_dict(self) -> dict[str, Any]:
        return {
            "wave": self.wave, "status": self.status, "targeted": self.targeted, "applied": self.applied,
            "pending": self.pending, "soaking": self.soaking, "succeeded": self.succeeded, "failed": self.failed,
            "refused": self.refused, "timedOut": self.timed_out, "unhealthy": self.unhealthy, "noData": self.no_data,
        }


@dataclass(frozen=True)
class RolloutView:
    """A rollout as an operator sees it."""

    deployment: str
    state: RolloutState
    wave: int  # 1-based: the newest wave out
    waves: tuple[WaveView, ...]
    policy: Mapping[str, Any]  # RolloutPolicy.to_dict()
    waiting_for: str  # what the rollout waits for now ("" when completed or aborted)
    reason: str  # why it is in its state (the abort reason, the timeout that stopped it, ...)
    started: datetime
    updated: datetime
    tripped: tuple[str, ...] = ()  # the devices that made it abort
    rolled_back: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # device -> "module:version" re-issued
    # as its last known-good module after the abort

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment, "state": self.state, "wave": self.wave,
            "waves": [w.to_dict() for w in self.waves], "waitingFor": self.waiting_for, "reason": self.reason,
            "tripped": list(self.tripped),
            "rolledBack": [{"device": d, "modules": list(m)} for d, m in sorted(self.rolled_back.items())],
            "policy": dict(self.policy), "started": self.started.isoformat(), "updated": self.updated.isoformat(),
        }


@dataclass(frozen=True)
class RolloutEvent:
    """One stored state change: who (a token's name, or ``hub`` for the engine), what, and why."""

    at: datetime
    actor: str
    action: str  # started, wave-started, waiting-approval, approved, paused, resumed, aborted, completed, rolled-back
    state: RolloutState  # the state after the change
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "action": self.action, "state": self.state,
                "reason": self.reason, "detail": dict(self.detail)}
