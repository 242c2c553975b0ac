"""examples/sklearn-digits: training, conversion, registration and the Azure ML entry script."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime
import pytest
from example_scripts import EXAMPLES, load_script

from edgeship.registry import Model
from edgeship.workspace import Workspace

EXAMPLE = EXAMPLES / "sklearn-digits"


def run_train(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def printed_accuracy(stdout: str) -> float:
    match = re.search(r"test accuracy \(onnxruntime\): ([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One training run shared by the module: (output folder, stdout)."""
    out = tmp_path_factory.mktemp("digits-out")
    return out, run_train("--output-dir", str(out))


@pytest.fixture(scope="module")
def train_module() -> ModuleType:
    return load_script(EXAMPLE / "train.py", "example_digits_train")


@pytest.fixture(scope="module")
def session(trained: tuple[Path, str]) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(trained[0] / "digits.onnx"), providers=["CPUExecutionProvider"])


def test_training_writes_an_onnx_model_with_plain_tensor_outputs(
    session: onnxruntime.InferenceSession,
) -> None:
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("input", "tensor(float)", [None, 64])
    outputs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert outputs == {"label": ("tensor(int64)", [None]), "probabilities": ("tensor(float)", [None, 10])}


def test_onnxruntime_reaches_the_printed_accuracy_on_the_test_split(
    trained: tuple[Path, str], train_module: ModuleType, session: onnxruntime.InferenceSession
) -> None:
    out, stdout = trained
    _, x_test, _, y_test = train_module.load_split()
    labels, probabilities = session.run(None, {"input": x_test})
    accuracy = float(np.mean(labels == y_test))
    assert accuracy > 0.9
    assert round(accuracy, 4) == printed_accuracy(stdout)
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(accuracy)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_training_is_reproducible_to_the_byte(trained: tuple[Path, str], tmp_path: Path) -> None:
    run_train("--output-dir", str(tmp_path))
    assert (tmp_path / "digits.onnx").read_bytes() == (trained[0] / "digits.onnx").read_bytes()


def test_committed_sample_request_is_test_rows_the_model_classifies_right(
    trained: tuple[Path, str], session: onnxruntime.InferenceSession
) -> None:
    out, _ = trained
    committed = json.loads((EXAMPLE / "sample-request.json").read_text())
    expected = json.loads((EXAMPLE / "sample-expected.json").read_text())
    assert committed == json.loads((out / "sample-request.json").read_text())
    assert expected == json.loads((out / "sample-expected.json").read_text())
    rows = np.asarray(committed["data"], dtype=np.float32)
    assert rows.shape[1] == 64
    labels, _ = session.run(None, {"input": rows})
    assert labels.tolist() == expected["predictions"]


def test_register_puts_digits_1_with_tags_and_accuracy_in_the_workspace(
    workspace: Workspace, tmp_path: Path
) -> None:
    stdout = run_train("--output-dir", str(tmp_path), "--register", "--workspace", str(workspace.root))
    assert "registered digits:1 sha256:" in stdout

    model = Model.get(workspace, "digits", 1)
    digest = hashlib.sha256((tmp_path / "digits.onnx").read_bytes()).hexdigest()
    assert model.digest == f"sha256:{digest}"
    assert model.model_framework == "onnx"
    assert model.tags["framework"] == "onnx"
    assert model.tags["dataset"] == "digits"
    assert float(model.properties["accuracy"]) == pytest.approx(printed_accuracy(stdout), abs=1e-4)


# ---------------------------------------------------------------------------------------------------
# score.py as Azure ML's inference server runs it: imported from its source directory, init() once,
# then run(**body) with the request's JSON body, which is how azmlinfsrv calls an @input_schema run().

_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    import score
    from inference_schema.schema_util import get_input_schema, get_output_schema

    score.init()
    body = json.loads(sys.stdin.read())
    result = {"response": json.loads(json.dumps(score.run(**body)))}
    try:
        score.run(data=[[0.0] * 63])
    except ValueError as e:
        result["bad_shape_error"] = str(e)
    result["input_schema"] = get_input_schema(score.run)
    result["output_schema"] = get_output_schema(score.run)
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def scored(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("azureml-app")
    model_dir = root / "azureml-models" / "digits" / "1"
    model_dir.mkdir(parents=True)
    shutil.copy(trained[0] / "digits.onnx", model_dir / "digits.onnx")
    source_dir = root / "source"
    shutil.copytree(EXAMPLE, source_dir, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    env = {**os.environ, "AZUREML_MODEL_DIR": str(model_dir)}
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=(EXAMPLE / "sample-request.json").read_text(),
        cwd=source_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_score_py_run_matches_in_process_onnxruntime(
    scored: dict[str, Any], session: onnxruntime.InferenceSession
) -> None:
    rows = np.asarray(json.loads((EXAMPLE / "sample-request.json").read_text())["data"], dtype=np.float32)
    labels, probabilities = session.run(None, {"input": rows})
    response = scored["response"]
    assert response["predictions"] == labels.tolist()
    np.testing.assert_allclose(response["probabilities"], probabilities, rtol=1e-6)
    expected = json.loads((EXAMPLE / "sample-expected.json").read_text())
    assert response["predictions"] == expected["predictions"]


def test_score_py_schema_rejects_a_row_of_the_wrong_width(scored: dict[str, Any]) -> None:
    assert "dimension #1" in scored["bad_shape_error"]
    assert "64" in scored["bad_shape_error"]


def test_score_py_decorators_describe_the_request_and_response(scored: dict[str, Any]) -> None:
    data = scored["input_schema"]["properties"]["data"]
    assert data["type"] == "array"
    assert data["items"]["type"] == "array"
    assert data["items"]["items"]["format"] == "float"
    assert set(scored["output_schema"]["properties"]) == {"predictions", "probabilities"}
