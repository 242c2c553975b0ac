"""The pure parts, in-process: the get_model_path stand-in, the v2 codec, AMLResponse, the config round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeship.scoring.backends import TensorSpec
from edgeship.scoring.config import ServiceConfig
from edgeship.scoring.errors import RequestError
from edgeship.scoring.v2 import check_inputs, decode_infer_request, encode_infer_response
from edgeship.scoring.wire import reply_from_result

# Imported by file location so the test process never gets a top-level ``azureml``.
from edgeship.scoring._shims.azureml.contrib.services.aml_response import AMLResponse  # isort: skip
from edgeship.scoring._shims.azureml.core.model import Model, ModelNotFoundException  # isort: skip


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    models = tmp_path / "azureml-models"
    (models / "clf" / "1").mkdir(parents=True)
    (models / "clf" / "1" / "model.onnx").write_text("v1")
    (models / "clf" / "10").mkdir()
    (models / "clf" / "10" / "model.onnx").write_text("v10")
    (models / "multi" / "3").mkdir(parents=True)
    (models / "multi" / "3" / "a.bin").write_text("a")
    (models / "multi" / "3" / "b.bin").write_text("b")
    return models


def test_get_model_path_with_several_models_picks_the_highest_version_numerically(layout, monkeypatch) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(layout))
    assert Model.get_model_path("clf") == str(layout / "clf" / "10" / "model.onnx")
    assert Model.get_model_path("clf", version=1) == str(layout / "clf" / "1" / "model.onnx")
    assert Model.get_model_path("multi") == str(layout / "multi" / "3")  # several entries: the folder


def test_get_model_path_with_one_model_dir_resolves_from_the_version_folder(layout, monkeypatch) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(layout / "clf" / "1"))
    assert Model.get_model_path("clf", version=1) == str(layout / "clf" / "1" / "model.onnx")
    assert Model.get_model_path("multi") == str(layout / "multi" / "3")


def test_get_model_path_names_what_is_deployed_when_a_model_is_missing(layout, monkeypatch) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(layout))
    with pytest.raises(ModelNotFoundException, match=r"deployed: clf, multi"):
        Model.get_model_path("nope")
    with pytest.raises(ModelNotFoundException, match=r"deployed versions: 1, 10"):
        Model.get_model_path("clf", version=2)


def test_aml_response_matches_azure_encoding() -> None:
    reply = reply_from_result(AMLResponse({"a": 1}, 202, {"X-Multi": "x, y"}, json_str=True))
    assert (reply.status, reply.body) == (202, b'{"a": 1}')
    assert (b"content-type", b"application/json") in reply.headers
    assert [v for k, v in reply.headers if k == b"x-multi"] == [b"x", b"y"]
    empty = reply_from_result(AMLResponse(None, 200))
    assert empty.body == b"{}"


def test_v2_decode_check_and_encode_round_trip() -> None:
    body = {"id": "req-7", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]}
    inputs, requested, request_id = decode_infer_request(body)
    assert inputs["x"].dtype == np.float64 and inputs["x"].shape == (2, 2)
    checked = check_inputs(inputs, [TensorSpec("x", "FP32", (-1, 2))])
    assert checked["x"].dtype == np.float32
    doc = encode_infer_response("m", "1", {"y": checked["x"] * 2}, requested, request_id)
    assert doc["id"] == "req-7" and doc["outputs"][0]["shape"] == [2, 2]
    assert list(doc["outputs"][0]["data"]) == [2, 4, 6, 8]
    with pytest.raises(RequestError, match="model takes INT8"):
        check_inputs(inputs, [TensorSpec("x", "INT8", (2, 2))])


def test_service_config_travels_as_json() -> None:
    config = ServiceConfig(model_root="/m", data_dir="/d", auth_keys=("a", "b"), providers=("X", "Y"))
    assert ServiceConfig.from_json(config.to_json()) == config


def test_uvicorn_takes_httptools_and_uvloop_when_installed(tmp_path: Path) -> None:
    """The scoring extra installs both; the server config must not pin h11 or asyncio."""
    pytest.importorskip("httptools")
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from edgeship.scoring.server import uvicorn_config

    uv = uvicorn_config(object(), ServiceConfig(model_root=str(tmp_path), data_dir=str(tmp_path)))
    assert (uv.http, uv.loop) == ("auto", "auto")
    uv.load()
    assert uv.http_protocol_class is HttpToolsProtocol
