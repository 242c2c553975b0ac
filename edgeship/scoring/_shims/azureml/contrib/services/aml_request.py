"""``rawhttp`` and ``AMLRequest`` as Azure ML's inference server provides them.

``@rawhttp`` on ``run`` makes the server pass the whole HTTP request instead of the
decoded body. Azure records that in a module flag (``_rawHttpRequested``); the
server reads the same flag, so scripts that import this module from either place
behave alike. ``AMLRequest`` offers the parts of the Flask request scripts use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl

__all__ = ["AMLRequest", "rawhttp"]

_rawHttpRequested = False

F = TypeVar("F", bound=Callable[..., Any])


def rawhttp(func: F) -> F:
    """Ask the server to call ``run(request)`` with an :class:`AMLRequest`."""
    global _rawHttpRequested
    _rawHttpRequested = True
    return func


class _Args:
    """Query parameters: ``get`` returns the first value, ``getlist`` all of them (as werkzeug)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        for k, v in self._pairs:
            if k == key:
                return type(v) if type else v
        return default

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._pairs if k == key]

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self._pairs))

    def to_dict(self) -> dict[str, str]:
        return {k: self.get(k) for k in self.keys()}

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self._pairs)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


class _Headers:
    """Case-insensitive request headers."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, key: str, default: Any = None) -> Any:
        lower = key.lower()
        for k, v in self._pairs:
            if k.lower() == lower:
                return v
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def keys(self) -> list[str]:
        return [k for k, _ in self._pairs]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


class AMLRequest:
    """The HTTP request handed to a ``@rawhttp`` ``run()``; mirrors the Flask request Azure passes."""

    def __init__(
        self,
        method: str = "GET",
        path: str = "/score",
        query_string: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        scheme: str = "http",
        host: str = "localhost",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = _Headers(headers or [])
        self.args = _Args(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        self.scheme = scheme
        self.host = self.headers.get("host", host)
        self._body = body

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string.decode('latin-1')}"

    @property
    def url(self) -> str:
        query = f"?{self.query_string.decode('latin-1')}" if self.query_string else ""
        return f"{self.scheme}://{self.host}{self.path}{query}"

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", ""))

    @property
    def mimetype(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int:
        return len(self._body)

    @property
    def is_json(self) -> bool:
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    @property
    def data(self) -> bytes:
        return self._body

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> Any:
        del cache, parse_form_data
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        del cache
        if not (force or self.is_json):
            if silent:
                return None
            raise ValueError("Request Content-Type is not application/json.")
        try:
            return json.loads(self._body)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self) -> Any:
        return self.get_json()

    @property
    def form(self) -> dict[str, str]:
        if self.mimetype != "application/x-www-form-urlencoded":
            return {}
        return dict(parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True))

    def __repr__(self) -> str:
        return f"<AMLRequest {self.method} {self.full_path!r}>"
