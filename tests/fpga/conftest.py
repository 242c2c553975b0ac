"""Real models and data for the FPGA tests: the digits MLP, the digits CNN and the CNTK MNIST net."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
CNTK = ROOT / "tests" / "data" / "mnist-cntk-opset7.onnx"


@dataclass(frozen=True)
class Case:
    """A model with calibration and evaluation samples shaped for its input."""

    name: str
    path: Path
    input_name: str
    calibration: np.ndarray
    eval_data: np.ndarray
    labels: np.ndarray


def _digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_digits(return_X_y=True)
    return images.astype(np.float32), labels


def upsample_28(rows: np.ndarray) -> np.ndarray:
    """8x8 digits (0-16) → [N,1,28,28] in 0-255 by nearest-neighbour, as MNIST nets expect."""
    idx = (np.arange(28) * 8) // 28
    images = rows.reshape(-1, 8, 8)[:, idx][:, :, idx]
    return (images * (255.0 / 16.0)).astype(np.float32)[:, None]


@pytest.fixture(scope="session")
def mlp_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    spec = importlib.util.spec_from_file_location("digits_train", ROOT / "examples" / "sklearn-digits" / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    out = tmp_path_factory.mktemp("mlp")
    train.main(["--output-dir", str(out)])
    x, y = _digits()
    return Case("mlp", out / "digits.onnx", "input", x[:64], x[1000:1400], y[1000:1400])


@pytest.fixture(scope="session")
def cnn_case() -> Case:
    x, y = _digits()
    x = x.reshape(-1, 1, 8, 8)
    return Case("cnn", DATA / "digits-cnn.onnx", "input", x[:64], x[1000:1400], y[1000:1400])


@pytest.fixture(scope="session")
def cntk_case() -> Case:
    x, y = _digits()
    big = upsample_28(x)
    return Case("cntk", CNTK, "Input3", big[:32], big[1000:1200], y[1000:1200])


@pytest.fixture(params=["mlp", "cnn", "cntk"])
def case(request: pytest.FixtureRequest) -> Case:
    return request.getfixturevalue(f"{request.param}_case")  # type: ignore[no-any-return]
