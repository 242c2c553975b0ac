"""Direct methods (``commands/{method}/{rid}`` -> ``responses/{rid}``), as IoT Edge's direct methods.

A call's payload is a JSON object of arguments; the answer is
``{"status": 200, "result": {...}}`` or ``{"status": 400|404|409|500|503, "error": "..."}``:
400 for bad arguments, 404 for an unknown method or module, 409 when the reconcile
loop is applying that module right now (try again), 500 when the runtime failed, 503
when :data:`QUEUE_LIMIT` calls are already waiting. Methods address modules by their
name; the agent maps them to the active slot's service.

Calls run on :class:`MethodWorker`'s one thread, in arrival order, beside the reconcile
loop (which may be building a venv for minutes): ``logs`` only reads files; ``restart``
changes a module under :class:`~edgeship.agent.guard.ModuleGuard` (``agent/guard.py``).

- ``restart`` ``{"module": NAME}``: stop and start the module's active service.
- ``logs`` ``{"module": NAME, "tail": N}`` (N 1..10000, default 100): ``{"logs": "..."}``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from edgeship.agent.guard import ModuleBusy, ModuleGuard
from edgeship.agent.runtimes.base import ModuleRuntime, UnknownServiceError
from edgeship.agent.state.store import StateStore
from edgeship.errors import EdgeshipError

__all__ = ["METHODS", "QUEUE_LIMIT", "MethodError", "MethodWorker", "call_method"]

log = logging.getLogger("edgeship.agent")
MAX_TAIL = 10_000  # log lines one call may ask for
QUEUE_LIMIT = 16  # calls waiting for the method thread; one more is answered 503


class MethodError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _args(payload: bytes) -> dict[str, Any]:
    if not payload.strip():
        return {}
    try:
        args = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MethodError(400, f"The arguments are not JSON ({exc}); send a JSON object.") from exc
    if not isinstance(args, dict):
        raise MethodError(400, "The arguments must be a JSON object, e.g. {\"module\": \"digits\"}.")
    return args


def _module(args: dict[str, Any]) -> str:
    module = args.get("module")
    if not isinstance(module, str) or not module:
        raise MethodError(400, "Give the module's name as {\"module\": NAME}.")
    return module


def _service(module: str, state: StateStore) -> str:
    service = state.state.active.get(module)
    if service is None:
        raise MethodError(404, f"This device runs no module {module!r}.")
    return service


def _restart(args: dict[str, Any], runtime: ModuleRuntime, state: StateStore, guard: ModuleGuard) -> dict[str, Any]:
    module = _module(args)
    with guard.changing(module):  # the active slot cannot change under us: the loop is not applying it
        service = _service(module, state)
        runtime.stop(service)
        status = runtime.start(service)
    return {"module": module, "service": service, "state": status.state, "port": status.port}


def _logs(args: dict[str, Any], runtime: ModuleRuntime, state: StateStore, _guard: ModuleGuard) -> dict[str, Any]:
    """Reads the log files only, so it needs no lock and never waits for the reconcile loop."""
    tail = args.get("tail", 100)
    if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= MAX_TAIL:
        raise MethodError(400, f"tail must be a whole number of lines between 1 and {MAX_TAIL}.")
    module = _module(args)
    service = _service(module, state)
    try:
        text = runtime.logs(service, tail=tail)
    except UnknownServiceError as exc:  # the loop removed that slot just now (an update's clean-up)
        raise MethodError(409, f"Module {module!r} is being updated; try again.") from exc
    return {"module": module, "service": service, "logs": text}


Handler = Callable[[dict[str, Any], ModuleRuntime, StateStore, ModuleGuard], dict[str, Any]]
METHODS: dict[str, Handler] = {
    "restart": _restart,
    "logs": _logs,
}


def call_method(
    method: str, payload: bytes, runtime: ModuleRuntime, state: StateStore, guard: ModuleGuard
) -> dict[str, Any]:
    """Run one direct method; always returns the answer object (never raises)."""
    handler = METHODS.get(method)
    try:
        if handler is None:
            raise MethodError(404, f"Unknown method {method!r}; this agent knows {', '.join(sorted(METHODS))}.")
        return {"status": 200, "result": handler(_args(payload), runtime, state, guard)}
    except MethodError as exc:
        return {"status": exc.status, "error": str(exc)}
    except ModuleBusy as exc:
        return {"status": 409, "error": str(exc)}
    except EdgeshipError as exc:
        return {"status": 500, "error": str(exc)}
    except Exception as exc:  # a method must always answer
        return {"status": 500, "error": f"{method} failed unexpectedly: {type(exc).__name__}: {exc}"}


class MethodWorker:
    """One thread that runs direct methods in arrival order, so they never wait behind a reconcile pass.

    :meth:`submit` is called from paho's network thread and never blocks: a call that
    finds :data:`QUEUE_LIMIT` calls waiting is answered 503 at once.
    """

    def __init__(
        self,
        runtime: ModuleRuntime,
        state: StateStore,
        guard: ModuleGuard,
        respond: Callable[[str, dict[str, Any]], None],
        *,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.guard = guard
        self.respond = respond
        self.limit = limit
        self._queue: queue.Queue[tuple[str, bytes, str]] = queue.Queue(maxsize=limit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="methods", daemon=True)

    def submit(self, method: str, payload: bytes, request_id: str) -> None:
        try:
            self._queue.put_nowait((method, payload, request_id))
        except queue.Full:
            log.warning("method %s (%s): 503, %d calls waiting", method, request_id, self.limit)
            self.respond(request_id, {
                "status": 503,
                "error": f"{self.limit} direct method calls are already waiting on this device; try again later.",
            })  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Let the call in progress finish (a restart takes up to its stop timeout); waiting calls are dropped."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                method, payload, request_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            answer = call_method(method, payload, self.runtime, self.state, self.guard)
            log.info("method %s (%s): %d", method, request_id, answer["status"])
            try:
                self.respond(request_id, answer)
            except Exception:  # a dead link must not end the method thread
                log.exception("could not answer method %s (%s)", method, request_id)
