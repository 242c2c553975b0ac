"""examples/tflite-sine: both models approximate sin(x), the int8 one after (de)quantization."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from example_scripts import EXAMPLES, load_script
from parts import need

EXAMPLE = EXAMPLES / "tflite-sine"
XS = [0.5, 1.0, math.pi / 2, 3.0, 4.0, 3 * math.pi / 2, 5.5]
TOLERANCE = 0.1


def _has_interpreter() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))


@pytest.fixture(scope="module")
def make_request() -> ModuleType:
    need(_has_interpreter(), "a TFLite interpreter (ai-edge-litert or tflite-runtime)")
    return load_script(EXAMPLE / "make_request.py", "example_tflite_make_request")


def invoke(interpreter: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Run one v2 request on the interpreter and answer with a v2 response, as a no-code server would."""
    (v2_input,) = request["inputs"]
    detail = interpreter.get_input_details()[0]
    assert v2_input["name"] == detail["name"]
    tensor = np.asarray(v2_input["data"], dtype=detail["dtype"]).reshape(v2_input["shape"])
    interpreter.set_tensor(detail["index"], tensor)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    value = interpreter.get_tensor(out["index"])
    return {"outputs": [{"name": out["name"], "shape": list(value.shape), "data": value.ravel().tolist()}]}


def predict(make_request: ModuleType, model: str, x: float) -> tuple[dict[str, Any], float]:
    interpreter = make_request.load_interpreter(EXAMPLE / model)
    request = make_request.make_request(x, interpreter.get_input_details()[0])
    response = invoke(interpreter, request)
    (y,) = make_request.decode_response(response, interpreter.get_output_details()[0])
    return request, y


@pytest.mark.parametrize("x", XS)
def test_float_model_gives_sine(make_request: ModuleType, x: float) -> None:
    request, y = predict(make_request, "hello_world_float.tflite", x)
    assert request["inputs"][0]["datatype"] == "FP32"
    assert request["inputs"][0]["data"] == [pytest.approx(x)]
    assert abs(y - math.sin(x)) < TOLERANCE


@pytest.mark.parametrize("x", XS)
def test_int8_model_gives_sine_after_quantization(make_request: ModuleType, x: float) -> None:
    request, y = predict(make_request, "hello_world_int8.tflite", x)
    (v2_input,) = request["inputs"]
    assert v2_input["datatype"] == "INT8"
    assert isinstance(v2_input["data"][0], int) and -128 <= v2_input["data"][0] <= 127
    assert abs(y - math.sin(x)) < TOLERANCE


def test_int8_quantization_clips_to_the_int8_range(make_request: ModuleType) -> None:
    assert make_request.quantize(100.0, np.dtype(np.int8), 0.02448, -128) == 127
    assert make_request.quantize(-100.0, np.dtype(np.int8), 0.02448, -128) == -128
    assert make_request.dequantize(np.array([5]), 0.008291, 5).tolist() == [0.0]


def test_cli_writes_one_request_per_x_and_decodes_a_response(make_request: ModuleType) -> None:
    script = str(EXAMPLE / "make_request.py")
    lines = subprocess.run(
        [sys.executable, script, "--model", str(EXAMPLE / "hello_world_int8.tflite"), "0", "1.57"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    assert [json.loads(line)["inputs"][0]["data"] for line in lines] == [[-128], [-64]]

    output = {"name": "StatefulPartitionedCall:0", "shape": [1, 1], "datatype": "INT8", "data": [126]}
    response = {"outputs": [output]}
    decoded = subprocess.run(
        [sys.executable, script, "--model", str(EXAMPLE / "hello_world_int8.tflite"), "--decode"],
        input=json.dumps(response), capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert float(decoded) == pytest.approx((126 - 5) * 0.008291, abs=1e-3)
