"""Where edgeship errors become HTTP responses: the one mapping for the REST API.

Core and service errors carry no status codes (STYLE.md); this table gives them
one. The most specific class wins because the table is searched in order. Every
error body is ``{"detail": message, "type": error class}`` (FastAPI's own
``detail`` key, so clients handle one shape).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from edgeship.errors import EdgeshipError, InputError, ManifestError, RegistryError, SignatureError, TransportError
from edgeship.hub.api.auth import AuthenticationError, PermissionDeniedError
from edgeship.hub.errors import AlreadyExistsError, DeviceTimeoutError, HubNotFoundError
from edgeship.hub.store import HubStoreError
from edgeship.modules.store import UnknownModuleError
from edgeship.registry.blobs import BlobCorruptedError

__all__ = ["STATUS_FOR", "install_error_handlers", "status_for"]

log = logging.getLogger("edgeship.hub.api")

STATUS_FOR: tuple[tuple[type[BaseException], int], ...] = (
    (AuthenticationError, 401),  # no token, unknown, expired (TokenExpiredError) or revoked (TokenRevokedError)
    (PermissionDeniedError, 403),  # a valid token whose role does not allow the request (api/roles.py)
    (HubNotFoundError, 404),
    (UnknownModuleError, 404),  # a module missing from the workspace an upload names
    (AlreadyExistsError, 409),
    (SignatureError, 422),  # an uploaded module is not signed by the hub's release keys
    (ManifestError, 422),  # ... or its manifest or artifacts do not match
    (InputError, 400),  # includes TargetConditionError, which names the column
    (BlobCorruptedError, 500),
    (RegistryError, 500),
    (HubStoreError, 503),  # the database is unreachable or failing: retry later
    (DeviceTimeoutError, 504),  # a direct method got no answer in time
    (TransportError, 503),  # the hub has no broker connection
)


def status_for(error: BaseException) -> int:
    for kind, status in STATUS_FOR:
        if isinstance(error, kind):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc), "type": type(exc).__name__}, status_code=status, headers=headers)

    app.add_exception_handler(EdgeshipError, handle)
