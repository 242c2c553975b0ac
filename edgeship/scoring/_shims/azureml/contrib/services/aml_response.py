"""``AMLResponse``: what a ``@rawhttp`` ``run()`` returns to control status, headers and body.

Same constructor as Azure ML's: ``AMLResponse(message, status_code,
response_headers={}, json_str=False, run_function_failed=False)``. With
``json_str=True`` the message is JSON-encoded; ``None`` becomes ``{}``; otherwise a
``str`` or ``bytes`` body is sent as given. Repeated header values are written
comma-separated, as in Azure ML.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["AMLResponse"]


class _ResponseHeaders:
    """Ordered header pairs that allow repeats (a small part of werkzeug's ``Headers``)."""

    def __init__(self) -> None:
        self._pairs: list[tuple[str, str]] = []

    def add(self, key: str, value: Any) -> None:
        self._pairs.append((key, str(value)))

    add_header = add

    def remove(self, key: str) -> None:
        self._pairs = [(k, v) for k, v in self._pairs if k.lower() != key.lower()]

    def __setitem__(self, key: str, value: Any) -> None:
        self.remove(key)
        self.add(key, value)

    def __getitem__(self, key: str) -> str:
        for k, v in self._pairs:
            if k.lower() == key.lower():
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._pairs))

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


class AMLResponse:
    """An HTTP response returned as-is by the scoring server."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: dict[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        self.status_code = int(status_code)
        self.headers = _ResponseHeaders()
        response_headers = response_headers or {}
        if message is None or json_str:
            self._body = json.dumps({} if message is None else message).encode("utf-8")
            self.headers["Content-Type"] = "application/json"
        else:
            self._body = message if isinstance(message, bytes) else str(message).encode("utf-8")
            if not any(k.lower() == "content-type" for k in response_headers):
                self.headers["Content-Type"] = "text/html; charset=utf-8"
        self.headers["x-ms-run-function-failed"] = run_function_failed
        for header, value in response_headers.items():
            if header.lower() == "content-type":
                self.headers.remove(header)
            for part in str(value).split(","):
                self.headers.add(header, part.strip())

    @property
    def data(self) -> bytes:
        return self._body

    def get_data(self, as_text: bool = False) -> Any:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def __repr__(self) -> str:
        return f"<AMLResponse {self.status_code} {len(self._body)} bytes>"
