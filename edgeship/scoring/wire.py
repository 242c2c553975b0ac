"""HTTP request and reply values, and JSON encoding as Azure ML's server encodes responses.

Azure ML's server ``json.dumps`` whatever ``run()`` returns (``None`` becomes
``{}``, a ``str`` becomes a JSON string) and passes response objects through. We
encode with orjson, which also takes numpy arrays and scalars (Azure would fail
with a 500 there) and writes NaN as ``null`` (Azure writes the invalid token
``NaN``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgeship.errors import ScoringError
from edgeship.scoring.errors import RequestError

__all__ = [
    "JSON_HEADERS",
    "HttpRequest",
    "Reply",
    "dumps",
    "error_reply",
    "json_reply",
    "loads",
    "reply_from_result",
]

JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(slots=True)
class HttpRequest:
    """One request as the ASGI server delivered it (header names are lower-case bytes)."""

    method: str
    path: str
    query_string: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    scheme: str = "http"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def text_headers(self) -> list[tuple[str, str]]:
        """Headers named as Flask/werkzeug presents them (``X-Test``), which scripts index by."""
        return [(k.decode("latin-1").title(), v.decode("latin-1")) for k, v in self.headers]

    @property
    def is_json(self) -> bool:
        ctype = (self.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
        return ctype == b"application/json" or (
            ctype.startswith(b"application/") and ctype.endswith(b"+json")
        )


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: list(JSON_HEADERS))


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays orjson cannot take natively, numpy scalars
        return value.tolist()
    if hasattr(value, "to_dict"):  # pandas
        return value.to_dict()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ScoringError(f"run() returned a value that cannot be encoded as JSON: {exc}.") from exc


def loads(body: bytes | str) -> Any:
    """Parse JSON; also the ``NaN``/``Infinity`` tokens Python clients send (as Azure's json.loads does)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except ValueError:
            if not body:
                raise RequestError("The request body is empty; send a JSON document.") from None
            raise RequestError(f"The request body is not valid JSON: {exc}.") from None


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, dumps(value))


def error_reply(status: int, message: str, *, v2: bool = False) -> Reply:
    """An error body: Azure ML's ``{"message": …}``, or the Open Inference Protocol's ``{"error": …}`` on ``/v2``."""
    return Reply(status, orjson.dumps({"error": message} if v2 else {"message": message}))


def _header_pairs(headers: Any) -> list[tuple[bytes, bytes]]:
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in items]


def reply_from_result(result: Any) -> Reply:
    """Encode ``run()``'s return value: response objects as they are, anything else as JSON."""
    if result is None:
        return Reply(200, b"{}")
    status = getattr(result, "status_code", None)
    if isinstance(status, int) and (hasattr(result, "get_data") or hasattr(result, "body")):
        body = result.get_data() if hasattr(result, "get_data") else result.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        raw_headers = getattr(result, "raw_headers", None)
        headers = (
            list(raw_headers) if raw_headers is not None else _header_pairs(getattr(result, "headers", []))
        )
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        if status >= 500:
            headers = [(k, v) for k, v in headers if k != b"x-ms-run-function-failed"]
            headers.append((b"x-ms-run-function-failed", b"True"))
        return Reply(status, bytes(body), headers)
    return Reply(200, dumps(result))
