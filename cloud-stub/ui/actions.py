"""The dashboard's actions (POST): sign out, and pause / resume / approve / abort a rollout.

Each action is checked in this order: the ``Origin`` is this host, the session is
valid, the CSRF token matches, the role may do the same thing over REST
(:func:`edgeship.hub.api.roles.permits` on the REST route), and then it calls the same
:class:`~edgeship.hub.services.rollouts.Rollouts` method as ``POST
/deployments/{id}/rollout/{action}``, with the token's name as the event's actor. A plain
form post (no script needed) answers with a redirect back to the deployment's page.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from edgeship.hub.api.auth import PermissionDeniedError
from edgeship.hub.services import HubServices
from edgeship.hub.services.rules import validate_deployment_id
from edgeship.hub.ui.pages import ROLLOUT_ACTION_ROUTE
from edgeship.hub.ui.session import check_csrf, check_origin, clear_session, current_viewer, may

__all__ = ["router"]

router = APIRouter()

Action = Literal["pause", "resume", "approve", "abort"]


@router.post("/signout")
async def signout(request: Request) -> Response:
    check_origin(request)
    viewer = await run_in_threadpool(current_viewer, request)  # a database read: off the event loop
    await check_csrf(request, viewer)
    response = RedirectResponse(f"{request.scope.get('root_path', '')}/signin", status_code=303)
    clear_session(request, response)
    return response


@router.post("/deployments/{deployment_id}/rollout/{action}")
async def rollout_action(
    request: Request,
    deployment_id: Annotated[str, Path(max_length=128)],
    action: Action,
    reason: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    check_origin(request)
    viewer = await run_in_threadpool(current_viewer, request)
    await check_csrf(request, viewer)
    validate_deployment_id(deployment_id)
    if not may(viewer, "POST", ROLLOUT_ACTION_ROUTE, deployment_id=deployment_id, action=action):
        raise PermissionDeniedError(
            f"The token {viewer.name!r} has the {viewer.role!r} role, which may look but not {action} a rollout; "
            "sign in with a token of the 'operator' role."
        )
    services: HubServices = request.app.state.services
    do = {"pause": services.rollouts.pause, "resume": services.rollouts.resume,
          "approve": services.rollouts.approve, "abort": services.rollouts.abort}[action]
    await run_in_threadpool(do, deployment_id, actor=viewer.name, reason=reason or None)
    return RedirectResponse(f"{request.scope.get('root_path', '')}/deployments/{deployment_id}", status_code=303)
