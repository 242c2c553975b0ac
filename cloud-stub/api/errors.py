"""Where edgeship errors become HTTP responses: the one mapping for the REST API.

Core and service errors carry no status codes (STYLE.md); this table gives them
one. The most specific class wins because the table is searched in order. Every
error body is ``{"detail": message, "type": error class}`` (FastAPI's own
``detail`` key, so clients handle one shape): request validation (422) and
Starlette's own 404/405 answers are reshaped to it too, validation adding the
refused fields under ``errors``. What each route declares is in
``edgeship.hub.api.responses``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edgeship.errors import EdgeshipError, InputError, ManifestError, RegistryError, SignatureError, TransportError
from edgeship.hub.api.auth import AuthenticationError, PermissionDeniedError
from edgeship.hub.errors import (
    AlreadyExistsError,
    DeviceTimeoutError,
    HubNotFoundError,
    RolloutStateError,
    SequenceExhaustedError,
)
from edgeship.hub.services.catalog import UploadTooLargeError
from edgeship.hub.store import HubStoreError
from edgeship.modules.store import UnknownModuleError
from edgeship.registry.blobs import BlobCorruptedError

__all__ = ["STATUS_FOR", "install_error_handlers", "status_for", "validation_message"]

log = logging.getLogger("edgeship.hub.api")

# A database error's text is the driver's: SQL, table and constraint names, the server's address.
# Callers get this sentence; the hub's log has the detail.
_STORE_FAILED = "The hub's database failed on this request; retry later (the reason is in the hub's log)."

STATUS_FOR: tuple[tuple[type[BaseException], int], ...] = (
    (AuthenticationError, 401),  # no token, unknown, expired (TokenExpiredError) or revoked (TokenRevokedError)
    (PermissionDeniedError, 403),  # a valid token whose role does not allow the request (api/roles.py)
    (HubNotFoundError, 404),
    (UnknownModuleError, 404),  # a module missing from the workspace an upload names
    (AlreadyExistsError, 409),
    (RolloutStateError, 409),  # an action the rollout's state does not allow (docs/rollouts.md)
    (UploadTooLargeError, 413),  # an uploaded module artifact over MAX_UPLOAD_BYTES
    (SequenceExhaustedError, 409),  # a device used every document sequence: re-create it (a guard; 68 years at 1/s)
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


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One sentence for FastAPI's list of validation errors: the first refused field, and how many more."""
    if not errors:
        return "The request does not match the API's schema; see /docs."
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "request"
    more = f" (and {len(errors) - 1} more in 'errors')" if len(errors) > 1 else ""
    return f"Request field {where}: {first.get('msg', 'invalid')}{more}; see /docs for the expected shape."


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        detail = _STORE_FAILED if isinstance(exc, HubStoreError) else str(exc)
        return JSONResponse({"detail": detail, "type": type(exc).__name__}, status_code=status, headers=headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # loc, msg and type only: the refused input is not echoed back (it may be large, or a secret).
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        body = {"detail": validation_message(errors), "type": "RequestValidationError", "errors": errors}
        return JSONResponse(body, status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        body = {"detail": f"{request.method} {request.url.path}: {exc.detail}.", "type": "HTTPException"}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        # A bug (every error a user can cause is an EdgeshipError): the one shape, no internals in the body.
        log.error("%s %s failed: %r (a bug; the server logs the traceback)", request.method, request.url.path, exc)
        body = {"detail": "The hub failed on this request; the reason is in its log. Please report it.",
                "type": "InternalError"}
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(EdgeshipError, handle)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crash)
