"""What each route declares in the OpenAPI besides its success: one error body, one sentence per status.

Every status a route can answer is listed on it (``responses=errors(...)``), so a
client generated from ``/openapi.json`` knows all of them and schemathesis'
``status_code_conformance`` holds (``tests/hub/test_api_fuzz.py``). Which status an
error class gets is decided once, in ``edgeship.hub.api.errors``; this module only
documents the answers. ``tests/hub/test_api_openapi.py`` fails when a route that needs
the token lacks 401/403, one with a path id lacks 404, one with input lacks 422, ...
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DESCRIPTIONS", "OPERATOR", "PLAIN_TEXT", "ErrorOut", "errors"]


class ErrorOut(BaseModel):
    """Every error body of the hub's API (4xx and 5xx alike)."""

    detail: str = Field(description="One sentence: what was wrong and what to do about it.")
    type: str = Field(description="The error class, e.g. 'HubNotFoundError', 'RequestValidationError'.")
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description="Request validation (422) only: every refused field as {loc, msg, type}.",
    )


DESCRIPTIONS: dict[int, str] = {
    400: "Bad input the schema cannot express: a malformed id, tag, method name, target condition or path.",
    401: "No operator token, or one this hub does not know: send 'Authorization: Bearer <token>'.",
    403: "The operator token's role is not allowed to call this operation.",
    404: "No device, module, deployment, document or blob has the id in the path or body.",
    409: "Something with that id exists already and differs from what was sent, or a device re-targeted "
         "by this change has used every document sequence (re-create it).",
    413: "The request body is over 1 MiB (MAX_REQUEST_BYTES); no real request is that large.",
    416: "The Range header is malformed or starts past the end; Content-Range: bytes */size gives the size.",
    422: "The request does not match the schema (see 'errors'), or a module or trust root fails verification.",
    503: "The hub's database or broker connection is unavailable; retry later.",
    504: "The device did not answer the direct method within the timeout.",
}


PLAIN_TEXT = frozenset({413, 416})
"""Answered in plain text: 413 by Starlette's body limit (before any route runs), 416 by the blob
route, as most HTTP caches expect."""


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: each code with the error model and its one sentence."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code in PLAIN_TEXT:
            out[code] = {"description": DESCRIPTIONS[code], "content": {"text/plain": {"schema": {"type": "string"}}}}
        else:
            out[code] = {"model": ErrorOut, "description": DESCRIPTIONS[code]}
    return out


OPERATOR = errors(401, 403, 503)
"""Every operator route: the token (401, 403) and the database (503)."""
