"""examples/onnx-mnist: the v2 request made from Azure ML's sample input is classified as a 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from example_scripts import EXAMPLES

EXAMPLE = EXAMPLES / "onnx-mnist"
REFERENCE_SHA256 = "0d715376572e89832685c56a65ef1391f5f0b7dd31d61050c91ff3ecab16c032"


@pytest.fixture(scope="module")
def request_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mnist") / "v2-request.json"
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_request.py"), "-o", str(out)], check=True, timeout=60
    )
    return json.loads(out.read_text())


def infer(v2_input: dict[str, Any]) -> np.ndarray:
    model = EXAMPLE / "model" / "mnist.onnx"
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert v2_input["name"] == model_input.name
    tensor = np.asarray(v2_input["data"], dtype=np.float32).reshape(v2_input["shape"])
    (scores,) = session.run(None, {model_input.name: tensor})
    return scores


def test_request_is_one_fp32_image_named_as_the_model_input(request_json: dict[str, Any]) -> None:
    (v2_input,) = request_json["inputs"]
    assert v2_input["name"] == "Input3"
    assert v2_input["shape"] == [1, 1, 28, 28]
    assert v2_input["datatype"] == "FP32"
    data = np.asarray(v2_input["data"])
    assert data.shape == (784,)
    assert data.min() >= 0 and data.max() <= 255


def test_request_through_onnxruntime_is_class_2(request_json: dict[str, Any]) -> None:
    scores = infer(request_json["inputs"][0])
    assert scores.shape == (1, 10)
    assert int(scores.argmax()) == 2


def test_committed_request_is_what_make_request_writes(request_json: dict[str, Any]) -> None:
    assert json.loads((EXAMPLE / "v2-request.json").read_text()) == request_json


def test_model_is_the_unmodified_reference_model(data_dir: Path) -> None:
    model = (EXAMPLE / "model" / "mnist.onnx").read_bytes()
    assert hashlib.sha256(model).hexdigest() == REFERENCE_SHA256
    assert model == (data_dir / "mnist-cntk-opset7.onnx").read_bytes()
