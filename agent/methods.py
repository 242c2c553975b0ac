"""Direct methods (``commands/{method}/{rid}`` -> ``responses/{rid}``), as IoT Edge's direct methods.

A call's payload is a JSON object of arguments; the answer is
``{"status": 200, "result": {...}}`` or ``{"status": 400|404|500, "error": "..."}``:
400 for bad arguments, 404 for an unknown method or module, 500 when the runtime
failed. Methods address modules by their name; the agent maps them to the active
slot's service.

- ``restart`` ``{"module": NAME}``: stop and start the module's active service.
- ``logs`` ``{"module": NAME, "tail": N}`` (N 1..10000, default 100): ``{"logs": "..."}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from edgeship.agent.runtimes.base import ModuleRuntime
from edgeship.agent.state.store import StateStore
from edgeship.errors import EdgeshipError

__all__ = ["METHODS", "MethodError", "call_method"]

MAX_TAIL = 10_000  # log lines one call may ask for


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


def _service(args: dict[str, Any], state: StateStore) -> str:
    module = args.get("module")
    if not isinstance(module, str) or not module:
        raise MethodError(400, "Give the module's name as {\"module\": NAME}.")
    service = state.state.active.get(module)
    if service is None:
        raise MethodError(404, f"This device runs no module {module!r}.")
    return service


def _restart(args: dict[str, Any], runtime: ModuleRuntime, state: StateStore) -> dict[str, Any]:
    service = _service(args, state)
    runtime.stop(service)
    status = runtime.start(service)
    return {"module": args["module"], "service": service, "state": status.state, "port": status.port}


def _logs(args: dict[str, Any], runtime: ModuleRuntime, state: StateStore) -> dict[str, Any]:
    tail = args.get("tail", 100)
    if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= MAX_TAIL:
        raise MethodError(400, f"tail must be a whole number of lines between 1 and {MAX_TAIL}.")
    service = _service(args, state)
    return {"module": args["module"], "service": service, "logs": runtime.logs(service, tail=tail)}


METHODS: dict[str, Callable[[dict[str, Any], ModuleRuntime, StateStore], dict[str, Any]]] = {
    "restart": _restart,
    "logs": _logs,
}


def call_method(method: str, payload: bytes, runtime: ModuleRuntime, state: StateStore) -> dict[str, Any]:
    """Run one direct method; always returns the answer object (never raises)."""
    handler = METHODS.get(method)
    try:
        if handler is None:
            raise MethodError(404, f"Unknown method {method!r}; this agent knows {', '.join(sorted(METHODS))}.")
        return {"status": 200, "result": handler(_args(payload), runtime, state)}
    except MethodError as exc:
        return {"status": exc.status, "error": str(exc)}
    except EdgeshipError as exc:
        return {"status": 500, "error": str(exc)}
    except Exception as exc:  # a method must always answer
        return {"status": 500, "error": f"{method} failed unexpectedly: {type(exc).__name__}: {exc}"}
