"""No-code model backends: one small protocol, one module per runtime, runtimes imported lazily.

A backend knows its tensors (names, v2 datatypes, shapes with -1 for dynamic
dimensions) and turns named numpy arrays into named numpy arrays. Everything
HTTP lives elsewhere, so the FPGA variant and the agent's health checks can use
the same backends directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeship.errors import ScoringError

__all__ = ["FRAMEWORK_SUFFIXES", "Backend", "TensorSpec", "find_model_file", "load_backend"]

FRAMEWORK_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the Open Inference Protocol describes it."""

    name: str
    datatype: str  # v2 name: FP32, INT8, BYTES, ...
    shape: tuple[int, ...]  # -1 marks a dynamic dimension
    parameters: dict[str, Any] = field(default_factory=dict)  # e.g. quantization scale/zero_point

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.parameters:
            doc["parameters"] = self.parameters
        return doc


@runtime_checkable
class Backend(Protocol):
    """A loaded model. ``infer`` is called from one thread per worker."""

    @property
    def platform(self) -> str:
        """The v2 ``platform``, e.g. ``onnxruntime_onnx``."""
        ...

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def metadata(self) -> dict[str, Any]:
        """Backend facts for ``/v2/models/{name}`` parameters (e.g. the execution provider used)."""
        ...

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def find_model_file(path: Path) -> Path:
    """The .onnx or .tflite file a no-code service serves: ``path`` itself or the only one inside it."""
    if path.is_file():
        if path.suffix.lower() in FRAMEWORK_SUFFIXES:
            return path
        raise ScoringError(
            f"{path.name} is not an .onnx or .tflite model, so it cannot be served without code; "
            "pass --entry-script with a score.py."
        )
    candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FRAMEWORK_SUFFIXES)
    if len(candidates) != 1:
        raise ScoringError(
            f"No-code serving needs exactly one .onnx or .tflite file in {path}, found {len(candidates)}; "
            "pass --entry-script with a score.py."
        )
    return candidates[0]


def load_backend(path: Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> Backend:
    model_file = find_model_file(path)
    framework = FRAMEWORK_SUFFIXES[model_file.suffix.lower()]
    if framework == "onnx":
        from edgeship.scoring.backends.onnx import OnnxBackend

        return OnnxBackend(model_file, providers)
    from edgeship.scoring.backends.tflite import TFLiteBackend

    return TFLiteBackend(model_file)
