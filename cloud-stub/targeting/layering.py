"""Layered deployments: for each module name, the highest-priority matching deployment wins.

As Azure IoT Edge's layered deployments: every deployment whose target condition
matches a device contributes its modules; when two contribute a module of the
same name, the one with the higher ``priority`` wins, and on equal priority the
more recently created one. edgeship adds a last, arbitrary but stable tiebreak
(the greater deployment id) so that two hubs, or two runs, always pick the same
module — a device must never flap between two equally ranked deployments.

The result depends only on the arguments: no clock, no database. The hub calls
:func:`select_modules` whenever a deployment or a device's tags change and builds
the device's deployment document from the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from edgeship.hub.targeting.condition import Condition, DeviceFacts, evaluate

__all__ = ["Deployment", "Selection", "contributing", "select_modules", "targets"]

M = TypeVar("M")
"""Whatever the hub stores per module of a deployment (a module reference, settings...)."""


@dataclass(frozen=True)
class Deployment(Generic[M]):
    """A deployment as the layering rule sees it: its condition already parsed."""

    id: str
    priority: int
    created_at: datetime
    condition: Condition
    modules: Mapping[str, M]

    def rank(self) -> tuple[int, datetime, str]:
        """Higher ranks win: priority, then creation time, then id."""
        return (self.priority, self.created_at, self.id)


@dataclass(frozen=True)
class Selection(Generic[M]):
    """The module chosen for one module name, and the deployment it came from."""

    deployment_id: str
    priority: int
    module: M


def targets(deployment: Deployment[M], device: DeviceFacts) -> bool:
    """True when ``deployment`` targets ``device`` (it may still lose every module to others)."""
    return evaluate(deployment.condition, device)


def select_modules(device: DeviceFacts, deployments: Iterable[Deployment[M]]) -> dict[str, Selection[M]]:
    """For each module name, the winning deployment's module among those targeting ``device``.

    Returns an empty dict when nothing targets the device: the hub then sends a
    document with no modules, and the agent removes what it runs.
    """
    winners: dict[str, Deployment[M]] = {}
    for deployment in deployments:
        if not targets(deployment, device):
            continue
        for name in deployment.modules:
            current = winners.get(name)
            if current is None or deployment.rank() > current.rank():
                winners[name] = deployment
    return {
        name: Selection(deployment.id, deployment.priority, deployment.modules[name])
        for name, deployment in sorted(winners.items())
    }


def contributing(selections: Mapping[str, Selection[M]]) -> list[str]:
    """The ids of the deployments that contributed at least one module, sorted (for the document)."""
    return sorted({selection.deployment_id for selection in selections.values()})
