"""Framework detection from file names, as Azure ML's ``model_framework`` values map to ours."""

from __future__ import annotations

from pathlib import Path

from edgeship.errors import InputError

__all__ = ["FRAMEWORKS", "detect_framework", "validate_framework"]

FRAMEWORKS = ("onnx", "tflite", "sklearn", "custom")

_BY_SUFFIX = {
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".pkl": "sklearn",
    ".joblib": "sklearn",
}


def validate_framework(value: str) -> str:
    lowered = value.lower()
    aliases = {"scikitlearn": "sklearn", "scikit-learn": "sklearn"}
    lowered = aliases.get(lowered, lowered)
    if lowered not in FRAMEWORKS:
        raise InputError(f"Unknown framework {value!r}; use one of: {', '.join(FRAMEWORKS)}.")
    return lowered


def detect_framework(files: list[Path]) -> str:
    """The framework all recognised files agree on, else ``custom``."""
    found = {_BY_SUFFIX[f.suffix.lower()] for f in files if f.suffix.lower() in _BY_SUFFIX}
    return found.pop() if len(found) == 1 else "custom"
