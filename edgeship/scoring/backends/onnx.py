"""ONNX models through onnxruntime, with execution providers taken in preference order.

The FPGA variant asks for ``VitisAIExecutionProvider`` then ``CPUExecutionProvider``;
providers this onnxruntime build lacks are skipped, and the one that actually runs
the model is reported in the metadata so a health check can tell a silent fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import ScoringError
from edgeship.scoring.backends import TensorSpec

__all__ = ["OnnxBackend"]

# onnxruntime's type strings -> v2 datatypes
_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, _ORT_TYPES.get(arg.type, arg.type), shape)


class OnnxBackend:
    platform = "onnxruntime_onnx"

    def __init__(self, model_file: Path, providers: Sequence[str]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ScoringError("onnxruntime is not installed; run 'pip install edgeship[scoring]'.") from exc
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        if not chosen:
            raise ScoringError(
                f"None of the execution providers {list(providers)} is available in this onnxruntime "
                f"(available: {', '.join(available)}); choose one of those with --provider."
            )
        try:
            self.session = ort.InferenceSession(str(model_file), providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ScoringError(f"onnxruntime cannot load {model_file.name}: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def metadata(self) -> dict[str, Any]:
        return {"execution_provider": self.provider, "execution_providers": self.session.get_providers()}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self._output_names, inputs)
        return {name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)}
