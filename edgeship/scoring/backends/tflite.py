"""TFLite models through ai-edge-litert, falling back to tflite-runtime on older devices.

Quantized tensors are served as they are (e.g. INT8); their scale and zero point
are reported in the tensor's ``parameters`` so a client can quantize inputs and
dequantize outputs itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import ScoringError
from edgeship.scoring.backends import TensorSpec

__all__ = ["TFLiteBackend"]


def _interpreter_class() -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise ScoringError(
            "Serving a .tflite model needs ai-edge-litert (pip install edgeship[tflite]) or tflite-runtime."
        ) from exc


def _spec(detail: dict[str, Any]) -> TensorSpec:
    from edgeship.scoring.v2 import datatype_of

    signature = detail.get("shape_signature")
    shape = tuple(
        int(d) for d in (signature if signature is not None and len(signature) else detail["shape"])
    )
    scale, zero_point = detail.get("quantization", (0.0, 0))
    params = {"quantization": {"scale": float(scale), "zero_point": int(zero_point)}} if scale else {}
    return TensorSpec(detail["name"], datatype_of(np.dtype(detail["dtype"])), shape, params)


class TFLiteBackend:
    platform = "tensorflow_lite"

    def __init__(self, model_file: Path) -> None:
        interpreter_cls, self.runtime = _interpreter_class()
        try:
            self.interpreter = interpreter_cls(model_path=str(model_file))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ScoringError(f"{self.runtime} cannot load {model_file.name}: {exc}") from exc
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        self.inputs = [_spec(d) for d in self._in]
        self.outputs = [_spec(d) for d in self._out]

    def metadata(self) -> dict[str, Any]:
        return {"runtime": self.runtime}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        resized = False
        for detail in self._in:
            array = inputs[detail["name"]]
            if tuple(array.shape) != tuple(detail["shape"]):
                self.interpreter.resize_tensor_input(detail["index"], list(array.shape))
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
            self._in = self.interpreter.get_input_details()
            self._out = self.interpreter.get_output_details()
        for detail in self._in:
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(inputs[detail["name"]]))
        self.interpreter.invoke()
        return {d["name"]: self.interpreter.get_tensor(d["index"]).copy() for d in self._out}
