"""``create_ui``: the dashboard as a FastAPI sub-application, mounted by the hub at ``/ui`` (ADR 0031).

It reads and acts only through the hub's services (the same objects the REST API and
the CLI's REST calls reach) and checks tokens with the same :class:`TokenCheck`, so it
is another window on one data path. Pages are rendered on the server from Jinja2
templates with autoescaping on; the scripts (htmx for live regions and form posts,
uPlot for charts) and styles are files of this package served from ``/ui/static``.
Errors become a page with the error's one sentence and the REST API's status code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from edgeship.errors import EdgeshipError
from edgeship.hub.api.auth import TokenCheck
from edgeship.hub.api.errors import status_for
from edgeship.hub.rollouts.gate_values import format_value
from edgeship.hub.services import HubServices
from edgeship.hub.services.fleet_query import FleetQuery
from edgeship.hub.store import HubStoreError
from edgeship.hub.ui import actions, pages
from edgeship.hub.ui.session import SignInRequiredError
from edgeship.workspace import Workspace

__all__ = ["MOUNT", "create_ui"]

MOUNT = "/ui"
HERE = Path(__file__).resolve().parent
log = logging.getLogger("edgeship.hub.ui")


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, auto_reload=False)
    env.filters["gate_value"] = format_value  # a measured value as its gate is written (2%, 1.3, 0)
    return Jinja2Templates(env=env)


def create_ui(services: HubServices, tokens: TokenCheck, *, registry: Workspace | None = None) -> FastAPI:
    """The dashboard; mount it with ``app.mount(MOUNT, create_ui(...))``. ``registry``: the workspace whose
    registered models the models page lists (the hub's own workspace under ``edgeship hub serve``)."""
    ui = FastAPI(title="edgeship dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    ui.state.services = services
    ui.state.tokens = tokens
    ui.state.fleet_query = FleetQuery(services.store)
    ui.state.registry = registry
    ui.state.templates = _templates()
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    ui.include_router(pages.router)
    ui.include_router(actions.router)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        target = f"{request.scope.get('root_path', '')}/signin"
        if request.headers.get("hx-request"):  # a live region: htmx follows HX-Redirect with a full page load
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method == "GET":
            return RedirectResponse(target, status_code=303)
        return error_page(request, exc, 401)

    async def edgeship_error(request: Request, exc: Exception) -> Response:
        return error_page(request, exc, status_for(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_page(request, exc, exc.status_code, f"{request.method} {request.url.path}: {exc.detail}.")

    ui.add_exception_handler(SignInRequiredError, sign_in_first)
    ui.add_exception_handler(EdgeshipError, edgeship_error)
    ui.add_exception_handler(HTTPException, http_error)
    return ui


def error_page(request: Request, exc: BaseException, status: int, message: str | None = None) -> Response:
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    if isinstance(exc, HubStoreError):
        message = "The hub's database failed on this request; retry later (the reason is in the hub's log)."
    templates: Jinja2Templates = request.app.state.templates
    context: dict[str, Any] = {"status": status, "message": message or str(exc), "viewer": None,
                               "base": request.scope.get("root_path", "")}
    name = "_error.html" if request.headers.get("hx-request") else "error.html"
    return templates.TemplateResponse(request, name, context, status_code=status)
