"""What a scoring service does, apart from HTTP: an entry script or a no-code model.

The app (``app.py``) handles transport concerns (routing, auth, metrics, status
codes) and delegates every request to a :class:`Service`. Both implementations
answer the Open Inference Protocol, so clients and health checks treat scripted
and no-code modules alike.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from edgeship.scoring.backends import Backend, TensorSpec
from edgeship.scoring.entry import EntryScript, RunMode
from edgeship.scoring.errors import NotFoundError, RequestError, RunFailedError
from edgeship.scoring.swagger import build_swagger
from edgeship.scoring.v2 import (
    check_inputs,
    datatype_of,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
)
from edgeship.scoring.wire import HttpRequest, Reply, reply_from_result

__all__ = ["ModelService", "ScriptService", "Service"]


class Service(Protocol):
    name: str
    version: str | None

    def score(self, request: HttpRequest) -> Reply: ...

    def swagger(self, version: str | None) -> dict[str, Any]: ...

    def metadata(self) -> dict[str, Any]: ...

    def infer(self, body: Any) -> dict[str, Any]: ...


def _schema_inputs(run: Any) -> list[TensorSpec]:
    """Input tensors declared with ``NumpyParameterType`` (read from the decorators' closures).

    Best effort: inference-schema keeps the parameter types only in its wrappers,
    so anything unexpected simply yields no tensor description.
    """
    specs: list[TensorSpec] = []
    func = run
    while hasattr(func, "_self_wrapper") and hasattr(func, "__wrapped__"):
        wrapper = func._self_wrapper
        cells = dict(zip(wrapper.__code__.co_freevars, wrapper.__closure__ or (), strict=False))
        name, ptype = cells.get("param_name"), cells.get("param_type")
        sample = getattr(ptype.cell_contents, "sample_input", None) if ptype else None
        if name is not None and isinstance(sample, np.ndarray) and sample.dtype.kind in "biuf":
            shape = (-1, *sample.shape[1:]) if sample.ndim else ()
            specs.append(TensorSpec(str(name.cell_contents), datatype_of(sample.dtype), shape))
        func = func.__wrapped__
    return list(reversed(specs))


def _as_outputs(result: Any) -> dict[str, np.ndarray]:
    if hasattr(result, "status_code"):
        raise RunFailedError("run() returned an HTTP response; call /score for it, /v2 infer needs data.")
    items = result.items() if isinstance(result, dict) else [("output_0", result)]
    try:
        return {str(k): np.asarray(v) for k, v in items}
    except (TypeError, ValueError) as exc:
        raise RunFailedError(f"The output of run() is not a tensor ({exc}).") from exc


class ScriptService:
    """An Azure ML entry script behind ``/score`` and the v2 protocol."""

    def __init__(self, script: EntryScript, name: str, version: str | None = None) -> None:
        self.script = script
        self.name = name
        self.version = version
        self._inputs = _schema_inputs(script.run) if script.mode is RunMode.SCHEMA else []

    def score(self, request: HttpRequest) -> Reply:
        arguments = self.script.arguments(request)
        started = time.perf_counter()
        result = self.script.call(arguments, request.text_headers())
        elapsed_ms = (time.perf_counter() - started) * 1000
        reply = reply_from_result(result)
        reply.headers.append((b"x-ms-run-fn-exec-ms", f"{elapsed_ms:.3f}".encode()))
        return reply

    def swagger(self, version: str | None) -> dict[str, Any]:
        return build_swagger(self.script.run, self.name, self.script.path.parent, version)

    def metadata(self) -> dict[str, Any]:
        params = {"entry_script": self.script.path.name, "input_mode": self.script.mode.value}
        return model_metadata(
            self.name,
            [self.version] if self.version else [],
            "azureml_entry_script",
            self._inputs,
            [],
            params,
        )

    def infer(self, body: Any) -> dict[str, Any]:
        """Call run() as /score would with the JSON object ``{input name: nested list}``."""
        if self.script.mode is RunMode.RAW:
            raise RequestError(
                "run() takes raw HTTP requests (@rawhttp); send them to /score instead of /v2."
            )
        inputs, requested, request_id = decode_infer_request(body)
        arguments = self.script.arguments_from_json({k: v.tolist() for k, v in inputs.items()})
        outputs = _as_outputs(self.script.call(arguments))
        return encode_infer_response(self.name, self.version, outputs, requested, request_id)


class ModelService:
    """A model served without code: only the v2 protocol."""

    def __init__(self, backend: Backend, name: str, version: str | None) -> None:
        self.backend = backend
        self.name = name
        self.version = version

    def score(self, request: HttpRequest) -> Reply:
        raise NotFoundError(
            f"This service runs model {self.name} without an entry script; "
            f"POST to /v2/models/{self.name}/infer."
        )

    def swagger(self, version: str | None) -> dict[str, Any]:
        raise NotFoundError("A model served without an entry script has no swagger; see /v2/models/{name}.")

    def metadata(self) -> dict[str, Any]:
        return model_metadata(
            self.name,
            [self.version] if self.version else [],
            self.backend.platform,
            self.backend.inputs,
            self.backend.outputs,
            self.backend.metadata(),
        )

    def infer(self, body: Any) -> dict[str, Any]:
        inputs, requested, request_id = decode_infer_request(body)
        checked = check_inputs(inputs, self.backend.inputs)
        try:
            outputs = self.backend.infer(checked)
        except Exception as exc:
            raise RunFailedError(f"The model failed on this input: {type(exc).__name__}: {exc}") from exc
        return encode_infer_response(self.name, self.version, outputs, requested, request_id)
