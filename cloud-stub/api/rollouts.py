"""REST routes of staged rollouts: what ``deployment show|events|pause|resume|approve|abort`` call.

HTTP in, one call of :class:`~edgeship.hub.services.rollouts.Rollouts`, its JSON out:
the bodies are ``RolloutView.to_dict()``, ``RolloutEvent.to_dict()`` and ``GateValues.to_dict()`` as they are,
so REST and the CLI say the same (``docs/rollouts.md``). An action is stored with the
calling token's name as its actor; ``read-only`` tokens may read a rollout but not act
on it (``edgeship.hub.api.roles``). A deployment without a rollout answers 404; an
action its state does not allow (resume a rollout that is not paused) answers 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from fastapi import Path as PathParam

from edgeship.hub.api.auth import TokenGrant
from edgeship.hub.api.deps import get_rollouts, require_operator
from edgeship.hub.api.responses import OPERATOR, errors
from edgeship.hub.api.routes import DeploymentId
from edgeship.hub.api.schemas import GateValueOut, RolloutActionIn, RolloutEventOut, RolloutOut
from edgeship.hub.services.rollouts import Rollouts

__all__ = ["router"]

Action = Annotated[
    Literal["pause", "resume", "approve", "abort"],
    PathParam(description="pause or resume the rollout, approve its next wave, or abort it (rolls its devices "
                          "back).", examples=["pause"]),
]

router = APIRouter(prefix="/deployments", tags=["rollouts"], dependencies=[Depends(require_operator)],
                   responses=OPERATOR)


@router.get("/{deployment_id}/rollout", response_model=RolloutOut, responses=errors(400, 404, 422))
def show_rollout(deployment_id: DeploymentId, rollouts: Rollouts = Depends(get_rollouts)) -> dict[str, Any]:
    """The rollout's state, its waves by outcome, what it waits for, and the devices that tripped or were rolled
    back. 404 when the deployment has none (it went to every targeted device at once)."""
    return rollouts.show(deployment_id).to_dict()


@router.get("/{deployment_id}/rollout/gates", response_model=list[GateValueOut], responses=errors(400, 404, 422))
def rollout_gate_values(
    deployment_id: DeploymentId, rollouts: Rollouts = Depends(get_rollouts),
) -> list[dict[str, Any]]:
    """What each health gate measures now, per wave and module version, beside its threshold: the values the
    engine judges on the devices running the release. Empty without gates, before a device of the waves out runs
    the release, and once the rollout completed or aborted. 404 when the deployment has no rollout."""
    return [g.to_dict() for g in rollouts.inspect(deployment_id)[1]]


@router.get("/{deployment_id}/events", response_model=list[RolloutEventOut], responses=errors(400, 404, 422))
def rollout_events(deployment_id: DeploymentId, rollouts: Rollouts = Depends(get_rollouts)) -> list[dict[str, Any]]:
    """Every state change of the rollout, oldest first: time, actor (token name, or ``hub``), action, reason."""
    return [event.to_dict() for event in rollouts.events(deployment_id)]


@router.post("/{deployment_id}/rollout/{action}", response_model=RolloutOut,
             responses=errors(400, 404, 409, 413, 422))
def act_on_rollout(
    deployment_id: DeploymentId,
    action: Action,
    body: Annotated[RolloutActionIn | None, Body(description="Optional: why, stored with the event.")] = None,
    grant: TokenGrant = Depends(require_operator),
    rollouts: Rollouts = Depends(get_rollouts),
) -> dict[str, Any]:
    """Pause, resume, approve the next wave of, or abort the rollout; the answer is the rollout after the change.
    409 when its state does not allow the action (approve a rollout that waits for no approval, ...)."""
    reason = body.reason if body is not None else None
    do = {"pause": rollouts.pause, "resume": rollouts.resume, "approve": rollouts.approve, "abort": rollouts.abort}
    return do[action](deployment_id, actor=grant.name, reason=reason).to_dict()
