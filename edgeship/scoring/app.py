"""The scoring server's HTTP face: a plain ASGI app (no framework on the hot path).

Routing, Bearer keys, body limits, metrics and the mapping of errors to status
codes live here, in one place each; what a request *means* is the
:class:`~edgeship.scoring.service.Service`'s business. ``run()`` executes on one
thread per worker (Azure ML's sync workers also run one request at a time), so
liveness and ``/metrics`` stay responsive while a long ``run()`` is busy.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from edgeship import __version__
from edgeship.errors import EdgeshipError, InputError
from edgeship.scoring.errors import (
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RunFailedError,
    UnsupportedMediaError,
)
from edgeship.scoring.metrics import Metrics
from edgeship.scoring.service import Service
from edgeship.scoring.wire import HttpRequest, Reply, error_reply, json_reply, loads

__all__ = ["ScoringApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("edgeship.scoring")

# The one table from error class to HTTP status; the first match wins.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (PayloadTooLargeError, 413),
    (UnsupportedMediaError, 415),
    (MethodNotAllowedError, 405),
    (NotFoundError, 404),
    (InputError, 400),
    (RunFailedError, 500),
    (EdgeshipError, 500),
)
_UNAUTHORIZED = Reply(
    401,
    orjson.dumps({"message": "Send a valid key as 'Authorization: Bearer <key>'."}),
    [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
)
_ECHOED = (b"x-request-id", b"x-ms-client-request-id", b"x-ms-request-id")


def _reply_for(exc: BaseException) -> Reply:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            if status == 500:
                log.error("%s", exc, exc_info=exc.__cause__ or exc)
            return error_reply(status, str(exc))
    log.exception("unexpected error", exc_info=exc)
    return error_reply(500, f"An unexpected internal error occurred ({type(exc).__name__}: {exc}).")


class ScoringApp:
    """ASGI callable serving one :class:`Service`."""

    def __init__(
        self,
        service: Service,
        auth_keys: Sequence[str] = (),
        metrics: Metrics | None = None,
        max_body_bytes: int = 100 * 1024 * 1024,
    ) -> None:
        self.service = service
        self._keys = [f"Bearer {k}".encode() for k in auth_keys]
        self.metrics = metrics or Metrics()
        self._max_body = max_body_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeship-run")
        model = f"/v2/models/{service.name}"
        versioned = f"{model}/versions/{service.version}" if service.version else None
        self._models = (versioned, model) if versioned else (model,)  # longest prefix first

    # ASGI -------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        endpoint = "other"
        try:
            endpoint, reply = await self._dispatch(scope, receive)
        except Exception as exc:
            reply = _reply_for(exc)
        headers = [(b"content-length", str(len(reply.body)).encode()), *reply.headers]
        for key, value in scope["headers"]:
            if key in _ECHOED:
                headers.append((key, value))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        if endpoint != "/metrics":
            self.metrics.observe(endpoint, reply.status, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InputError("The client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLargeError(f"The request body exceeds {self._max_body} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _authorized(self, scope: Scope) -> bool:
        if not self._keys:
            return True
        for key, value in scope["headers"]:
            if key == b"authorization":
                return any(hmac.compare_digest(value, k) for k in self._keys)
        return False

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # Routing ----------------------------------------------------------------
    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[str, Reply]:
        method, path = scope["method"], scope["path"]
        if path == "/score":
            if not self._authorized(scope):
                return "/score", _UNAUTHORIZED
            request = HttpRequest(
                method,
                path,
                scope.get("query_string", b""),
                scope["headers"],
                await self._read_body(receive),
                scope.get("scheme", "http"),
            )
            return "/score", await self._in_thread(self.service.score, request)
        if path == "/":
            _only(method, "GET")
            return "/", Reply(200, b"Healthy", [(b"content-type", b"text/plain; charset=utf-8")])
        if path == "/swagger.json":
            _only(method, "GET")
            version = _query_value(scope.get("query_string", b""), "version")
            return path, json_reply(self.service.swagger(version))
        if path == "/metrics":
            _only(method, "GET")
            body, content_type = self.metrics.render()
            return path, Reply(200, body, [(b"content-type", content_type.encode())])
        if path in ("/v2/health/live", "/v2/health/ready"):
            _only(method, "GET")
            return path, json_reply({path.rsplit("/", 1)[1]: True})
        if path == "/v2":
            _only(method, "GET")
            return path, json_reply({"name": "edgeship", "version": __version__, "extensions": []})
        if path.startswith("/v2/models/"):
            return await self._model_route(scope, receive, method, path)
        raise NotFoundError(
            f"No endpoint {path}; see /swagger.json, /score and /v2/models/{self.service.name}."
        )

    async def _model_route(self, scope: Scope, receive: Receive, method: str, path: str) -> tuple[str, Reply]:
        for prefix in self._models:
            if path == prefix or path.startswith(prefix + "/"):
                action = path[len(prefix) :]
                break
        else:
            name = path[len("/v2/models/") :].split("/", 1)[0]
            raise NotFoundError(f"No model {name!r} here; this service serves {self.service.name!r}.")
        endpoint = "/v2/models/{name}" + action
        if action not in ("", "/ready", "/infer"):
            raise NotFoundError(f"No endpoint {path}; a model has /, /ready and /infer.")
        if not self._authorized(scope):
            return endpoint, _UNAUTHORIZED
        if action == "/infer":
            _only(method, "POST")
            body = await self._read_body(receive)
            document = await self._in_thread(_infer, self.service, body)
            return endpoint, json_reply(document)
        _only(method, "GET")
        if action == "/ready":
            return endpoint, json_reply({"name": self.service.name, "ready": True})
        return endpoint, json_reply(self.service.metadata())


def _infer(service: Service, body: bytes) -> dict[str, Any]:
    return service.infer(loads(body))


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowedError(f"This endpoint accepts {allowed}, not {method}.")


def _query_value(query_string: bytes, key: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get(key)
    return values[0] if values else None
