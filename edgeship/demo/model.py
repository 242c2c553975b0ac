"""The demo's models: two versions of a digits classifier, trained here in about a second each.

Nothing is downloaded: scikit-learn ships the digits data set. Version 1 and 2
differ only in their hidden layer, so the second release is a *model-only*
update (same entry script, same environment lock): the devices reuse their
environment and swap the model blue/green.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.errors import InputError

__all__ = ["TrainedModel", "sample_request", "train_digits"]

INPUT_NAME = "input"
FEATURES = 64  # 8x8 pixels, values 0-16
_HIDDEN = {1: (32,), 2: (64,)}


@dataclass(frozen=True)
class TrainedModel:
    path: Path
    accuracy: float
    hidden: tuple[int, ...]


def _imports() -> Any:
    try:
        import numpy as np
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier
    except ModuleNotFoundError as exc:
        raise InputError(
            f"The demo trains its model with '{exc.name}'; install it with pip install 'edgeship[all]'."
        ) from exc
    return np, convert_sklearn, FloatTensorType, load_digits, ConvergenceWarning, train_test_split, MLPClassifier


def _split() -> tuple[Any, Any, Any, Any]:
    np, _, _, load_digits, _, train_test_split, _ = _imports()
    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)


def train_digits(version: int, out_dir: Path) -> TrainedModel:
    """Train release ``version`` (1 or 2) of the digits MLP and write ``out_dir/digits.onnx``."""
    np, convert_sklearn, FloatTensorType, _, ConvergenceWarning, _, MLPClassifier = _imports()
    hidden = _HIDDEN[version]
    x_train, x_test, y_train, y_test = _split()
    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=400, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    onx = convert_sklearn(
        clf,
        initial_types=[(INPUT_NAME, FloatTensorType([None, FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onx.graph.name = f"digits_mlp_v{version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "digits.onnx"
    path.write_bytes(onx.SerializeToString())
    accuracy = float(np.mean(clf.predict(x_test) == y_test))
    return TrainedModel(path, accuracy, hidden)


def sample_request(rows: int = 3) -> tuple[dict[str, Any], list[int]]:
    """The first ``rows`` held-out digits in Azure ML's request shape, and their true labels."""
    _, x_test, _, y_test = _split()
    return {"data": x_test[:rows].tolist()}, [int(v) for v in y_test[:rows]]
