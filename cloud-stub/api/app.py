"""``create_app``: the hub's FastAPI application over the hub's services and one token check.

The app holds no state of its own: the services (and through them the store) and the
token check are passed in, so tests and ``edgeship hub serve`` (later) build the
same object graph.
"""

from __future__ import annotations

from fastapi import FastAPI

from edgeship.hub.api import blobs, rollouts, routes, uploads
from edgeship.hub.api.auth import TokenCheck
from edgeship.hub.api.errors import install_error_handlers
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.services import HubServices
from edgeship.workspace import Workspace

__all__ = ["MAX_REQUEST_BYTES", "create_app"]

MAX_REQUEST_BYTES = 1024 * 1024
"""The largest request body the API reads (413 past it). FastAPI reads a JSON body before
the token dependency runs, so without this an unauthenticated client could make the hub
buffer a body of any size. The largest real bodies are a trust root (256 KiB, checked by
its route) and a deployment's module settings; tags are at most 8 KiB."""


def create_app(services: HubServices, tokens: TokenCheck, credentials: DeviceCredentials | None = None, *,
               registry: Workspace | None = None) -> FastAPI:
    """The REST API; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``; the dashboard at ``/ui/``.

    ``credentials`` issues device broker credentials; by default passwords only, with no broker to reload.
    ``registry``: the workspace whose model registry the dashboard lists (None: none shown).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("edgeship")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        app_version = "0"
    app = FastAPI(
        title="edgeship hub",
        version=app_version,
        description="Devices, signed modules, layered deployments and resumable blob downloads.",
        max_body_size=MAX_REQUEST_BYTES,
    )
    app.state.services = services
    app.state.tokens = tokens
    app.state.credentials = credentials if credentials is not None else DeviceCredentials(services.fleet)
    install_error_handlers(app)
    for router in (routes.devices, routes.modules, routes.deployments, rollouts.router, routes.trust, blobs.router,
                   uploads.router):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    from edgeship.hub.ui.app import MOUNT, create_ui

    app.mount(MOUNT, create_ui(services, tokens, registry=registry))  # docs/dashboard.md: same services and tokens
    return app
