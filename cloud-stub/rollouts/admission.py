"""Which devices a staged deployment counts for in layering right now, and which modules are pinned after aborts.

Issuing asks :meth:`Admission.admits` for every (deployment, device) pair before the
layering rule picks modules, so a staged deployment reaches exactly the waves that are
out; everything else about layering (priorities, tiebreaks) is unchanged:

- no rollout, or ``completed``: the deployment counts for every device it targets;
- ``aborted``: it counts for nobody (the fleet rollback);
- otherwise (``rolling-out``, ``paused``, ``waiting-approval``): a device counts once its
  wave is out. A device the plan does not know (it joined the target after the start)
  takes the wave :meth:`WavePlan.wave_for_newcomer` gives it, so it gets what the
  current phase gives its wave.

:meth:`Admission.pins` are last known-good modules an abort re-issued: a pinned module
is added to a device's document only where layering gives no module of that name.

Pure: built from stored rows, asked by issuing (``docs/rollouts.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeship.hub.rollouts.waves import WavePlan

__all__ = ["Admission", "StagedDeployment", "plan_from_members"]


def plan_from_members(members: Mapping[str, int], wave_count: int) -> WavePlan:
    """The :class:`WavePlan` stored as device -> wave (0-based)."""
    waves: list[list[str]] = [[] for _ in range(max(wave_count, max(members.values(), default=0) + 1))]
    for device, wave in members.items():
        waves[wave].append(device)
    return WavePlan(tuple(tuple(sorted(w)) for w in waves))


@dataclass(frozen=True)
class StagedDeployment:
    id: str
    state: str
    wave: int  # 0-based: the newest wave out
    plan: WavePlan


@dataclass(frozen=True)
class Admission:
    staged: Mapping[str, StagedDeployment] = field(default_factory=dict)
    pinned: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # device -> module -> {version, settings}

    def admits(self, deployment_id: str, device_id: str) -> bool:
        rollout = self.staged.get(deployment_id)
        if rollout is None or rollout.state == "completed":
            return True
        if rollout.state == "aborted":
            return False
        return rollout.plan.wave_for_newcomer(deployment_id, device_id) <= rollout.wave

    def pins(self, device_id: str) -> Mapping[str, Any]:
        return self.pinned.get(device_id, {})

    @property
    def everyone(self) -> bool:
        """True when no rollout limits anyone and nothing is pinned (issuing can skip the checks)."""
        return not self.pinned and all(r.state == "completed" for r in self.staged.values())
