"""What a caller learns when a request fails, and how an operator finds the rest.

Two rules, both as Azure ML's inference server has them:

* Every response carries a request id (``x-request-id``: the caller's, or a new
  UUID; ``x-ms-request-id`` and ``x-ms-client-request-id`` as Azure sets them).
* A 5xx body is generic: it says something failed and names the request id, never
  the exception text, a path or a ``file:line`` of the entry script, which can hold
  secrets (a connection string in an error message, a home folder in a path). The
  detail goes to the ``edgeship.scoring`` log under that request id. A service
  started with ``error_details`` (``--error-details``,
  ``EDGESHIP_SCORING_ERROR_DETAILS=1``) puts the detail in the body too, for
  debugging on a trusted network.

A 4xx body always names the problem: it describes the caller's own input.
Errors carry no HTTP status; the one table from error class to status is here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from edgeship.errors import EdgeshipError, InputError, ScoringError
from edgeship.scoring.errors import (
    HeaderTooLargeError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RunFailedError,
    UnsupportedMediaError,
)
from edgeship.scoring.wire import Reply, error_reply

__all__ = ["ENV_ERROR_DETAILS", "MAX_REQUEST_ID", "failure_reply", "request_ids"]

ENV_ERROR_DETAILS = "EDGESHIP_SCORING_ERROR_DETAILS"
MAX_REQUEST_ID = 100  # characters, as Azure ML; a longer id is answered 431

log = logging.getLogger("edgeship.scoring")

# The one table from error class to HTTP status; the first match wins.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (HeaderTooLargeError, 431),
    (PayloadTooLargeError, 413),
    (UnsupportedMediaError, 415),
    (MethodNotAllowedError, 405),
    (NotFoundError, 404),
    (InputError, 400),
    (RunFailedError, 500),
    (EdgeshipError, 500),
)
_RUN_FAILED = "An unexpected error occurred in the scoring script or model. See the server log for request id {}."
_INTERNAL = "An unexpected internal error occurred. See the server log for request id {}."


def _checked(name: str, value: bytes) -> str:
    if len(value) > MAX_REQUEST_ID:
        raise HeaderTooLargeError(f"{name} must not exceed {MAX_REQUEST_ID} characters; send a shorter id.")
    if not all(0x20 < b < 0x7F for b in value):
        raise InputError(f"{name} must be printable ASCII without spaces; send an id such as a UUID.")
    return value.decode("ascii")


def request_ids(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The request id and the id headers of the response, from the request's headers.

    ``x-request-id`` is the caller's or a new UUID; ``x-ms-request-id`` is the caller's,
    else its ``x-ms-client-request-id``, else the request id; ``x-ms-client-request-id``
    is echoed. Raises :class:`HeaderTooLargeError` (431) or :class:`InputError` (400) for
    an id that is too long or not printable, so logs stay one line per id.
    """
    given: dict[bytes, str] = {}
    for key, value in headers:
        if key in (b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id") and value:
            given[key] = _checked(key.decode(), value)
    request_id = given.get(b"x-request-id") or str(uuid.uuid4())
    client_id = given.get(b"x-ms-client-request-id", "")
    legacy_id = given.get(b"x-ms-request-id") or client_id or request_id
    out = [(b"x-request-id", request_id.encode()), (b"x-ms-request-id", legacy_id.encode())]
    if client_id:
        out.append((b"x-ms-client-request-id", client_id.encode()))
    return request_id, out


def failure_reply(exc: BaseException, request_id: str, *, v2: bool = False, details: bool = False) -> Reply:
    """The reply for a request that raised ``exc``; 5xx are logged with their traceback.

    ``v2`` picks the Open Inference Protocol body (``{"error": ...}``) over Azure's
    (``{"message": ...}``); ``details`` puts a 5xx's exception text in the body.
    """
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            if status < 500:
                return error_reply(status, str(exc), v2=v2)
            break
    else:
        status = 500
    run_failed = isinstance(exc, RunFailedError)
    detail = str(exc) if isinstance(exc, EdgeshipError) else f"{type(exc).__name__}: {exc}"
    log.error("request %s failed: %s", request_id, detail, exc_info=exc.__cause__ or exc)
    if details:
        message = detail if isinstance(exc, EdgeshipError) else f"An unexpected internal error occurred ({detail})."
    else:
        message = (_RUN_FAILED if isinstance(exc, ScoringError) else _INTERNAL).format(request_id)
    reply = error_reply(status, message, v2=v2)
    if run_failed:
        reply.headers.append((b"x-ms-run-function-failed", b"True"))
    return reply
