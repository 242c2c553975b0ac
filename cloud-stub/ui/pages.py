"""The dashboard's pages (GET): sign-in, fleet, device, deployments and rollouts, modules.

Each page is one call or a few into the hub's services and a template. A request that
htmx makes for a live region (``HX-Request``) gets the region's fragment instead of
the whole page, from the same template block, so a poll re-reads the database (any hub
process answers it the same).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from edgeship.errors import EdgeshipError, InputError, TransportError
from edgeship.hub.api.auth import AuthenticationError, PermissionDeniedError
from edgeship.hub.api.roles import METHOD_ROUTE
from edgeship.hub.errors import DeviceTimeoutError, HubNotFoundError
from edgeship.hub.services import HubServices
from edgeship.hub.services.fleet_query import MAX_PAGE, STATUSES, FleetFilter, FleetQuery
from edgeship.hub.services.rules import validate_device_id
from edgeship.hub.ui.session import (
    Viewer,
    check_origin,
    current_viewer,
    may,
    sign_in,
    start_session,
)
from edgeship.hub.ui.views import CHART_BATCHES, charts, module_models, module_size, signature_status
from edgeship.registry import Model
from edgeship.registry.store import ModelRecord
from edgeship.workspace import Workspace

__all__ = ["ROLLOUT_ACTION_ROUTE", "router"]

ROLLOUT_ACTION_ROUTE = "/deployments/{deployment_id}/rollout/{action}"  # the REST route whose role rule applies
PAGE_SIZE = 50
MAX_FILTER_CHARS = 4096
MAX_LOG_LINES = 1000

router = APIRouter()


def _services(request: Request) -> HubServices:
    services: HubServices = request.app.state.services
    return services


def render(request: Request, name: str, viewer: Viewer | None, code: int = 200, **context: Any) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    context.update(viewer=viewer, base=request.scope.get("root_path", ""), partial=bool(
        request.headers.get("hx-request")))
    return templates.TemplateResponse(request, name, context, status_code=code)


@router.get("/", include_in_schema=False)
def home(request: Request) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/fleet", status_code=303)


@router.get("/signin")
def signin_page(request: Request) -> Response:
    return render(request, "signin.html", None, error="")


@router.post("/signin")
def signin(request: Request, token: str = Form("", max_length=1024)) -> Response:
    check_origin(request)
    try:
        sign_in(request, token)
    except AuthenticationError as exc:
        return render(request, "signin.html", None, code=401, error=str(exc))
    response = RedirectResponse(f"{request.scope.get('root_path', '')}/fleet", status_code=303)
    start_session(request, response, token)
    return response


@router.get("/fleet")
def fleet_page(
    request: Request,
    viewer: Viewer = Depends(current_viewer),
    condition: str = Query("", max_length=MAX_FILTER_CHARS),
    status: str = Query("", max_length=32),
    module: str = Query("", max_length=256),
    page: int = Query(1, ge=1, le=1_000_000),
    size: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE),
) -> Response:
    filters = FleetFilter(condition=condition, status=status, module=module)
    query: FleetQuery = request.app.state.fleet_query
    error = ""
    try:
        result = query.page(filters, offset=(page - 1) * size, limit=size)
    except InputError as exc:
        error, result = str(exc), None
    params = {k: v for k, v in (("condition", condition), ("status", status), ("module", module)) if v}
    pages = max(1, -(-result.counts.devices // size)) if result is not None else 1
    name = "_fleet_live.html" if request.headers.get("hx-request") and result is not None else "fleet.html"
    return render(request, name, viewer, code=400 if error else 200, filters=filters, result=result,
                  error=error, statuses=STATUSES, page=page, pages=pages, size=size, query=urlencode(params),
                  here=urlencode({**params, "page": page}))


@router.get("/devices/{device_id}")
def device_page(device_id: str, request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    fleet = _services(request).fleet
    view = fleet.get_device(device_id)
    batches = fleet.recent_telemetry(device_id, CHART_BATCHES)
    state = view.reported.state if view.reported is not None else {}
    modules = state.get("modules") if isinstance(state.get("modules"), dict) else {}
    return render(request, "device.html", viewer, view=view, state=state, modules=modules,
                  charts=charts(batches), batches=len(batches),
                  may_logs=may(viewer, "POST", METHOD_ROUTE, device_id=device_id, method="logs"))


@router.get("/devices/{device_id}/logs")
def device_logs(
    device_id: str,
    request: Request,
    viewer: Viewer = Depends(current_viewer),
    module: str = Query(..., min_length=1, max_length=128),
    tail: int = Query(100, ge=1, le=MAX_LOG_LINES),
) -> Response:
    """The module's log tail through the agent's ``logs`` direct method (allowed to ``read-only`` as over REST)."""
    if not may(viewer, "POST", METHOD_ROUTE, device_id=device_id, method="logs"):
        raise PermissionDeniedError(f"The token {viewer.name!r} may not read device logs.")
    try:
        answer = _services(request).fleet.invoke_method(validate_device_id(device_id), "logs",
                                                        {"module": module, "tail": tail}, timeout=10.0)
    except (InputError, DeviceTimeoutError, HubNotFoundError, TransportError) as exc:  # shown in the region
        return render(request, "_logs.html", viewer, module=module, status_text="no answer", error=str(exc), logs="")
    raw = answer.get("result")
    result: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return render(request, "_logs.html", viewer, module=module, status_text=str(answer.get("status", "")),
                  error=str(answer.get("error") or ""), logs=str(result.get("logs", "")))


def _deployments(services: HubServices) -> list[dict[str, Any]]:
    rows = []
    records = services.deployments.list_deployments()
    for record, status in zip(records, services.deployments.statuses(records), strict=True):
        try:
            rollout = services.rollouts.show(record.id)
        except HubNotFoundError:
            rollout = None
        rows.append({"record": record, "counts": status.counts(), "rollout": rollout})
    return rows


@router.get("/deployments")
def deployments_page(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    name = "_deployments_live.html" if request.headers.get("hx-request") else "deployments.html"
    return render(request, name, viewer, rows=_deployments(_services(request)))


def _deployment(services: HubServices, deployment_id: str) -> dict[str, Any]:
    record = services.deployments.get_deployment(deployment_id)
    status = services.deployments.deployment_status(deployment_id)
    try:
        rollout, gate_values = services.rollouts.inspect(deployment_id)
        events = services.rollouts.events(deployment_id)
    except HubNotFoundError:
        rollout, gate_values, events = None, (), []
    return {"record": record, "status": status, "counts": status.counts(), "rollout": rollout,
            "gate_values": gate_values, "events": list(reversed(events))}


def _deployment_response(request: Request, viewer: Viewer, deployment_id: str, name: str) -> Response:
    data = _deployment(_services(request), deployment_id)
    actions = {a: may(viewer, "POST", ROLLOUT_ACTION_ROUTE, deployment_id=deployment_id, action=a)
               for a in ("pause", "resume", "approve", "abort")}
    return render(request, name, viewer, actions=actions, **data)


@router.get("/deployments/{deployment_id}")
def deployment_page(deployment_id: str, request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    return _deployment_response(request, viewer, deployment_id, "deployment.html")


@router.get("/deployments/{deployment_id}/live")
def deployment_live(deployment_id: str, request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    """The page's live region (counts, rollout, waves, events, devices), polled by htmx every 2 s."""
    return _deployment_response(request, viewer, deployment_id, "_deployment_live.html")


@router.get("/modules")
def modules_page(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    services = _services(request)
    root = services.keys.trust_root
    rows: list[dict[str, Any]] = []
    pinned: dict[str, list[str]] = {}  # model digest -> the modules whose manifest pins it
    for module in services.catalog.list_modules():
        pins = module_models(module)
        rows.append({"record": module, "signature": signature_status(module, root), "size": module_size(module),
                     "models": pins})
        for pin in pins:
            pinned.setdefault(str(pin.get("digest")), []).append(module.ref)
    models, registry_error = _registered_models(request.app.state.registry)
    return render(request, "modules.html", viewer, rows=rows, models=models, pinned=pinned,
                  registry_error=registry_error)


def _registered_models(registry: Workspace | None) -> tuple[list[ModelRecord] | None, str]:
    """The workspace registry's model versions (None: the hub has no registry), or the registry's error."""
    if registry is None or not registry.exists():
        return None, ""
    try:
        return [m.record for m in Model.list(registry)], ""
    except EdgeshipError as exc:
        return [], str(exc)
