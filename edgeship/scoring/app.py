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
from edgeship.errors import InputError
from edgeship.scoring.errors import MethodNotAllowedError, NotFoundError, PayloadTooLargeError
from edgeship.scoring.failures import failure_reply, request_ids
from edgeship.scoring.metrics import Metrics
from edgeship.scoring.openapi_v2 import v2_openapi
from edgeship.scoring.service import Service
from edgeship.scoring.wire import HttpRequest, Reply, error_reply, json_reply, loads

__all__ = ["ScoringApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("edgeship.scoring")

_KEY_NEEDED = "Send a valid key as 'Authorization: Bearer <key>'."
_UNAUTHORIZED = Reply(
    401,
    orjson.dumps({"message": _KEY_NEEDED}),
    [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
)
_UNAUTHORIZED_V2 = Reply(401, orjson.dumps({"error": _KEY_NEEDED}), _UNAUTHORIZED.headers)
_FIXED = frozenset(
    {"/", "/score", "/swagger.json", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/openapi.json"}
)
_MODEL_ACTIONS = frozenset({"", "/ready", "/infer"})


class ScoringApp:
    """ASGI callable serving one :class:`Service`."""

    def __init__(
        self,
        service: Service,
        auth_keys: Sequence[str] = (),
        metrics: Metrics | None = None,
        max_body_bytes: int = 100 * 1024 * 1024,
        error_details: bool = False,
        scoring_timeout_ms: int | None = None,
    ) -> None:
        self.service = service
        self.scoring_timeout_ms = scoring_timeout_ms  # SCORING_TIMEOUT_MS: a /score run() longer than this is a 504
        self.error_details = error_details  # 5xx bodies carry the exception text (debugging only)
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
        path = scope["path"]
        endpoint = self._endpoint(path)
        request_id = "-"  # until the request's id headers are read (they can be refused)
        id_headers: list[tuple[bytes, bytes]] = []
        try:
            request_id, id_headers = request_ids(scope["headers"])
            reply = await self._dispatch(scope, receive, endpoint)
        except Exception as exc:
            reply = failure_reply(exc, request_id, v2=path.startswith("/v2"), details=self.error_details)
        if endpoint != "/metrics":  # counted before sending, so a client that got its answer sees it counted
            self.metrics.observe(endpoint, reply.status, time.perf_counter() - started)
        headers = [(b"content-length", str(len(reply.body)).encode()), *reply.headers, *id_headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    def _endpoint(self, path: str) -> str:
        """The metrics label of a path: its route template, so label values stay few."""
        if path in _FIXED:
            return path
        for prefix in self._models:
            if path == prefix or path.startswith(prefix + "/"):
                action = path[len(prefix) :]
                return "/v2/models/{name}" + action if action in _MODEL_ACTIONS else "other"
        return "other"

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
    async def _dispatch(self, scope: Scope, receive: Receive, endpoint: str) -> Reply:
        method, path = scope["method"], scope["path"]
        if endpoint == "/score":
            if not self._authorized(scope):
                return _UNAUTHORIZED
            body = await self._read_body(receive)
            request = HttpRequest(
                method,
                path,
                scope.get("query_string", b""),
                scope["headers"],
                body,
                scope.get("scheme", "http"),
            )
            if self.scoring_timeout_ms is None:
                reply: Reply = await self._in_thread(self.service.score, request)
                return reply
            try:
                return await asyncio.wait_for(self._in_thread(self.service.score, request),
                                              self.scoring_timeout_ms / 1000)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                # The run() thread cannot be stopped; it finishes in the background and the next request waits
                # for it, as under Azure ML's sync workers. The caller gets an answer at the deadline.
                log.warning("run() exceeded SCORING_TIMEOUT_MS=%d; answered 504", self.scoring_timeout_ms)
                return error_reply(504, f"run() did not finish within {self.scoring_timeout_ms} ms "
                                        "(SCORING_TIMEOUT_MS); make it faster or raise scoringTimeoutMs.")
        if endpoint.startswith("/v2/models/"):
            return await self._model_route(scope, receive, method, endpoint)
        if endpoint == "other":
            name = path[len("/v2/models/") :].split("/", 1)[0] if path.startswith("/v2/models/") else ""
            if name and name != self.service.name:
                raise NotFoundError(f"No model {name!r} here; this service serves {self.service.name!r}.")
            raise NotFoundError(
                f"No endpoint {path}; see /score, /swagger.json and /v2/models/{self.service.name}."
            )
        _only(method, "GET")
        if endpoint == "/v2/openapi.json":
            if not self._authorized(scope):
                return _UNAUTHORIZED_V2
            return json_reply(v2_openapi(self.service.metadata(), self.service.version, bool(self._keys)))
        if endpoint == "/":
            return Reply(200, b"Healthy", [(b"content-type", b"text/plain; charset=utf-8")])
        if endpoint == "/swagger.json":
            return json_reply(self.service.swagger(_query_value(scope.get("query_string", b""), "version")))
        if endpoint == "/metrics":
            body, content_type = self.metrics.render()
            return Reply(200, body, [(b"content-type", content_type.encode())])
        if endpoint == "/v2":
            return json_reply({"name": "edgeship", "version": __version__, "extensions": []})
        return json_reply({endpoint.rsplit("/", 1)[1]: True})  # /v2/health/live, /v2/health/ready

    async def _model_route(self, scope: Scope, receive: Receive, method: str, endpoint: str) -> Reply:
        if not self._authorized(scope):
            return _UNAUTHORIZED_V2
        if endpoint.endswith("/infer"):
            _only(method, "POST")
            body = await self._read_body(receive)
            document = await self._in_thread(_infer, self.service, body)
            return json_reply(document)
        _only(method, "GET")
        if endpoint.endswith("/ready"):
            return json_reply({"name": self.service.name, "ready": True})
        return json_reply(self.service.metadata())


def _infer(service: Service, body: bytes) -> dict[str, Any]:
    return service.infer(loads(body))


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowedError(f"This endpoint accepts {allowed}, not {method}.")


def _query_value(query_string: bytes, key: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get(key)
    return values[0] if values else None
