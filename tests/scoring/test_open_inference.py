"""No-code serving through the Open Inference Protocol: ONNX (onnxruntime) and TFLite (ai-edge-litert)."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from conftest import DATA, Server

from edgeship.workspace import Workspace


@pytest.fixture(scope="module")
def mnist(serve, model_workspace: Workspace) -> Server:
    return serve("-m", "mnist:1", "--workspace", str(model_workspace.root))


@pytest.fixture(scope="module")
def sine(serve, model_workspace: Workspace) -> Server:
    return serve("-m", "sine", "--workspace", str(model_workspace.root))


@pytest.fixture(scope="module")
def sine_int8(serve, model_workspace: Workspace) -> Server:
    return serve("-m", "sine-int8", "--workspace", str(model_workspace.root))


def _mnist_request() -> dict:
    """The reference input (an ONNX TensorProto as JSON, base64 float32) as a v2 request."""
    tensor = json.loads((DATA / "mnist-predict-input.json").read_text())["inputs"]["Input3"]
    pixels = np.frombuffer(base64.b64decode(tensor["rawData"]), dtype=np.float32)
    shape = [int(d) for d in tensor["dims"]]
    return {
        "id": "req-1",
        "inputs": [{"name": "Input3", "shape": shape, "datatype": "FP32", "data": pixels.tolist()}],
    }


def test_health_and_server_metadata(mnist: Server) -> None:
    assert mnist.client.get("/v2/health/live").json() == {"live": True}
    assert mnist.client.get("/v2/health/ready").status_code == 200
    assert mnist.client.get("/v2").json()["name"] == "edgeship"
    assert mnist.client.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}


def test_onnx_metadata_comes_from_the_model(mnist: Server) -> None:
    meta = mnist.client.get("/v2/models/mnist").json()
    assert meta["name"] == "mnist" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "Input3", "datatype": "FP32", "shape": [1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "Plus214_Output_0", "datatype": "FP32", "shape": [1, 10]}]
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"


def test_onnx_reference_digit_is_class_2(mnist: Server) -> None:
    r = mnist.client.post("/v2/models/mnist/infer", json=_mnist_request())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "mnist" and body["model_version"] == "1" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert output["name"] == "Plus214_Output_0" and output["shape"] == [1, 10]
    assert int(np.argmax(output["data"])) == 2
    versioned = mnist.client.post("/v2/models/mnist/versions/1/infer", json=_mnist_request())
    assert versioned.json()["outputs"][0]["data"] == output["data"]


def test_bad_v2_requests_are_4xx_naming_the_problem(mnist: Server) -> None:
    good = _mnist_request()["inputs"][0]
    cases = [
        ({"inputs": []}, "non-empty"),
        ({"inputs": [{**good, "name": "x"}]}, "missing ['Input3']"),
        ({"inputs": [{**good, "shape": [1, 1, 28]}]}, "shape [1, 1, 28] needs 28"),
        ({"inputs": [{**good, "datatype": "FP99"}]}, "unknown datatype"),
        ({"inputs": [{**good, "datatype": "BYTES", "data": ["a"] * 784}]}, "BYTES but the model takes FP32"),
        ({"inputs": [{**good, "shape": [784, 1, 1, 1]}]}, "has shape [784, 1, 1, 1]"),
        ({**_mnist_request(), "outputs": [{"name": "nope"}]}, "Unknown outputs"),
    ]
    for request, message in cases:
        r = mnist.client.post("/v2/models/mnist/infer", json=request)
        assert r.status_code == 400, (request.keys(), r.text)
        assert message in r.json()["error"], r.json()  # the Open Inference Protocol's error body
    assert mnist.client.post("/v2/models/other/infer", json=_mnist_request()).status_code == 404
    assert mnist.client.post("/v2/models/mnist/infer", content=b"[").status_code == 400
    r = mnist.client.post("/score", content=b"{}")
    assert r.status_code == 404 and "/v2/models/mnist/infer" in r.json()["message"]


def test_fp64_input_is_cast_to_the_models_fp32(mnist: Server) -> None:
    request = _mnist_request()
    request["inputs"][0]["datatype"] = "FP64"
    r = mnist.client.post("/v2/models/mnist/infer", json=request)
    assert r.status_code == 200
    assert int(np.argmax(r.json()["outputs"][0]["data"])) == 2


def test_tflite_float_model_approximates_sine(sine: Server) -> None:
    meta = sine.client.get("/v2/models/sine").json()
    assert meta["platform"] == "tensorflow_lite"
    (spec,) = meta["inputs"]
    assert spec["datatype"] == "FP32" and spec["shape"] == [-1, 1]
    xs = [0.5, 1.0, 2.0, 4.0, 5.5]
    request = {"inputs": [{"name": spec["name"], "shape": [len(xs), 1], "datatype": "FP32", "data": xs}]}
    r = sine.client.post("/v2/models/sine/infer", json=request)
    assert r.status_code == 200, r.text
    (output,) = r.json()["outputs"]
    assert output["shape"] == [5, 1]
    for x, y in zip(xs, output["data"], strict=True):
        assert abs(y - math.sin(x)) < 0.15, (x, y)


def test_tflite_int8_model_reports_quantization_and_approximates_sine(sine_int8: Server) -> None:
    meta = sine_int8.client.get("/v2/models/sine-int8").json()
    (spec,) = meta["inputs"]
    (out_spec,) = meta["outputs"]
    assert spec["datatype"] == "INT8" and out_spec["datatype"] == "INT8"
    q_in, q_out = spec["parameters"]["quantization"], out_spec["parameters"]["quantization"]
    xs = [0.5, 1.5, 3.0, 4.5]
    data = [round(x / q_in["scale"]) + q_in["zero_point"] for x in xs]
    request = {"inputs": [{"name": spec["name"], "shape": [len(xs), 1], "datatype": "INT8", "data": data}]}
    r = sine_int8.client.post("/v2/models/sine-int8/infer", json=request)
    assert r.status_code == 200, r.text
    (output,) = r.json()["outputs"]
    assert output["datatype"] == "INT8"
    for x, q in zip(xs, output["data"], strict=True):
        y = (q - q_out["zero_point"]) * q_out["scale"]
        assert abs(y - math.sin(x)) < 0.15, (x, y)


def test_the_v2_openapi_document_describes_this_model(mnist: Server) -> None:
    doc = mnist.client.get("/v2/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    assert set(doc["paths"]) == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/mnist",
        "/v2/models/mnist/ready",
        "/v2/models/mnist/infer",
        "/v2/models/mnist/versions/1",
        "/v2/models/mnist/versions/1/ready",
        "/v2/models/mnist/versions/1/infer",
    }
    tensor = doc["components"]["schemas"]["InferenceRequest"]["properties"]["inputs"]["items"]["properties"]
    assert tensor["name"]["enum"] == ["Input3"]
    assert "FP32" in tensor["datatype"]["enum"] and "FP64" in tensor["datatype"]["enum"]  # cast as the server does
    assert "BYTES" not in tensor["datatype"]["enum"]
    assert (tensor["shape"]["minItems"], tensor["shape"]["maxItems"]) == (4, 4)


@pytest.mark.parametrize(
    ("field", "value"), [("id", 7), ("id", {"a": 1}), ("parameters", [1]), ("parameters", "x")]
)
def test_an_id_that_is_not_a_string_or_parameters_not_an_object_is_a_400(mnist: Server, field, value) -> None:
    body = {**_mnist_request(), field: value}
    r = mnist.client.post("/v2/models/mnist/infer", json=body)
    assert r.status_code == 400
    assert f'"{field}" must be' in r.json()["error"]


@pytest.mark.parametrize(
    "tensor",
    [
        {"name": "Input3", "shape": [1, 1, 28, 28], "datatype": {}, "data": [0.0] * 784},
        {"name": ["Input3"], "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784},
        {"name": "Input3", "shape": [True, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784},
        {"name": "Input3", "shape": [3648463045, 34359738368, 0, 0], "datatype": "FP32", "data": []},
        {"name": "Input3", "shape": [2**70, 0], "datatype": "FP32", "data": []},
    ],
    ids=["datatype-object", "name-list", "shape-bool", "zero-size-huge-dims", "dim-over-int64"],
)
def test_malformed_tensors_found_by_fuzzing_are_400s(mnist: Server, tensor: dict) -> None:
    r = mnist.client.post("/v2/models/mnist/infer", json={"inputs": [tensor]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]
