"""Calibration and evaluation data: ``.npy``/``.npz`` arrays checked against the model's input.

Data is checked before any quantization starts, so a wrong file fails in a
second with the tensor and both shapes named, not deep inside onnxruntime.
Samples are fed one batch of ``batch_size`` rows at a time; a model whose batch
dimension is fixed gets batches of exactly that size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgeship.errors import CalibrationDataError
from edgeship.fpga.graph import InputSpec

__all__ = ["MIN_CALIBRATION_SAMPLES", "NumpyCalibrationReader", "batches", "check_samples", "load_array", "load_labels"]

MIN_CALIBRATION_SAMPLES = 16  # fewer rows give ranges that depend on which digits happened to be picked


def load_array(path: Path, key: str | None = None) -> np.ndarray:
    """The array in a ``.npy`` file, or in a ``.npz`` under ``key`` (or its only array)."""
    if not path.is_file():
        raise CalibrationDataError(f"Data file {path} does not exist; give a .npy or .npz file.")
    if path.suffix not in (".npy", ".npz"):
        raise CalibrationDataError(f"Data file {path.name} is not .npy or .npz; save the samples with numpy.save.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, OSError, zipfile errors
        raise CalibrationDataError(f"Cannot read {path.name} as numpy data: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if key is not None and key in names:
            return np.asarray(loaded[key])
        if len(names) == 1:
            return np.asarray(loaded[names[0]])
        raise CalibrationDataError(
            f"{path.name} holds arrays {', '.join(names)}; name one after the model input {key!r}."
        )


def check_samples(data: np.ndarray, spec: InputSpec, *, source: str, minimum: int = MIN_CALIBRATION_SAMPLES) -> None:
    """Raise CalibrationDataError unless ``data`` is ``minimum``+ rows matching the input's dtype and shape."""
    expected = spec.describe()
    got = f"{data.dtype}[{','.join(str(d) for d in data.shape)}]"
    if data.dtype != np.dtype(spec.dtype):
        raise CalibrationDataError(
            f"{source} is {got} but model input {spec.name!r} is {expected}: the dtypes differ; "
            f"convert with .astype(numpy.{spec.dtype})."
        )
    row = spec.shape[1:]
    if data.ndim != len(spec.shape) or any(
        want is not None and want != got_d for want, got_d in zip(row, data.shape[1:], strict=True)
    ):
        raise CalibrationDataError(
            f"{source} is {got} but model input {spec.name!r} is {expected}: the shapes differ "
            "(the first dimension counts samples)."
        )
    if data.shape[0] < minimum:
        raise CalibrationDataError(
            f"{source} has {data.shape[0]} samples for input {spec.name!r}; give at least {minimum}."
        )


def load_labels(path: Path, rows: int) -> np.ndarray:
    """Integer class labels, one per evaluation row."""
    labels = load_array(path, "labels")
    if labels.ndim != 1 or labels.shape[0] != rows or not np.issubdtype(labels.dtype, np.integer):
        raise CalibrationDataError(
            f"Labels in {path.name} are {labels.dtype}{list(labels.shape)}; give {rows} integer class labels."
        )
    return labels.astype(np.int64)


def batches(data: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive row batches; a trailing partial batch is dropped for a fixed batch size."""
    for start in range(0, data.shape[0] - batch_size + 1, batch_size):
        yield data[start : start + batch_size]


class NumpyCalibrationReader(CalibrationDataReader):
    """Feeds checked samples to onnxruntime's calibrator; ``rewind`` lets one reader serve several trials."""

    def __init__(self, data: np.ndarray, spec: InputSpec, batch_size: int | None = None) -> None:
        self.data = data
        self.spec = spec
        fixed = spec.shape[0]
        self.batch_size = fixed if fixed is not None else (batch_size or 16)
        self._iter: Iterator[np.ndarray] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.spec.name: batch}

    def rewind(self) -> None:
        self._iter = batches(self.data, self.batch_size)
