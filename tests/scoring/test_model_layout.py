"""Models laid out as Azure ML lays them out: AZUREML_MODEL_DIR, Model.get_model_path, the data collector."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SCRIPTS, Server, run_cli

from edgeship.workspace import Workspace


@pytest.fixture(scope="module")
def one_model(serve, model_workspace: Workspace) -> Server:
    return serve(
        "-e",
        str(SCRIPTS / "models.py"),
        "-m",
        "beta",
        "--workspace",
        str(model_workspace.root),
        env={"TEST_MODEL_NAMES": "beta"},
    )


@pytest.fixture(scope="module")
def several_models(serve, model_workspace: Workspace) -> Server:
    return serve(
        "-e",
        str(SCRIPTS / "models.py"),
        "-m",
        "alpha:1",
        "-m",
        "alpha:2",
        "-m",
        "beta:1",
        "--workspace",
        str(model_workspace.root),
        env={"TEST_MODEL_NAMES": "alpha,beta", "TEST_MODEL_V1": "alpha"},
    )


def test_one_model_points_azureml_model_dir_at_its_version_folder(one_model: Server) -> None:
    body = one_model.client.post("/score", content=b"{}").json()
    model_dir = Path(body["model_dir"])
    assert model_dir.parts[-3:] == ("azureml-models", "beta", "1")
    assert body["found"]["beta"] == {"path": str(model_dir / "beta.txt"), "text": "beta v1"}


def test_several_models_point_at_the_models_root_and_resolve_by_name_and_version(
    several_models: Server,
) -> None:
    body = several_models.client.post("/score", content=b"{}").json()
    root = Path(body["model_dir"])
    assert root.name == "azureml-models"
    assert body["found"]["alpha"] == {"path": str(root / "alpha" / "2" / "alpha.txt"), "text": "alpha v2"}
    assert body["found"]["beta"]["text"] == "beta v1"
    assert body["found"]["v1"]["path"] == str(root / "alpha" / "1" / "alpha.txt")


def test_a_prepared_model_dir_is_served_without_a_workspace(serve, several_models: Server, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(several_models.data_dir / "azureml-models", bundle / "azureml-models")
    server = serve(
        "-e",
        str(SCRIPTS / "models.py"),
        "--model-dir",
        str(bundle),
        "--workspace",
        str(tmp_path / "no-such-workspace"),
        env={"TEST_MODEL_NAMES": "alpha,beta"},
    )
    body = server.client.post("/score", content=b"{}").json()
    assert body["model_dir"] == str(bundle / "azureml-models")
    assert body["found"]["alpha"]["text"] == "alpha v2"


def test_unknown_model_is_one_clear_error(model_workspace: Workspace, tmp_path: Path) -> None:
    result = run_cli(
        ["-e", str(SCRIPTS / "plain.py"), "-m", "gamma:1", "--workspace", str(model_workspace.root)], tmp_path
    )
    assert result.returncode == 1
    assert "gamma" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_collector_writes_json_lines_under_the_data_dir(serve) -> None:
    server = serve("-e", str(SCRIPTS / "collector.py"))
    r = server.client.post("/score", json={"data": [[1, 2], [3, 4]]})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == [3, 7]
    server.client.post("/score", json={"data": [[5, 6]]})
    inputs = list((server.data_dir / "modeldata" / "digits" / "inputs").rglob("data.jsonl"))
    assert len(inputs) == 1
    records = [json.loads(line) for line in inputs[0].read_text().splitlines()]
    assert [rec["data"] for rec in records] == [[[1, 2], [3, 4]], [[5, 6]]]
    assert records[0]["featureNames"] == ["a", "b"]
    predictions = next((server.data_dir / "modeldata" / "digits" / "predictions").rglob("data.jsonl"))
    first = json.loads(predictions.read_text().splitlines()[0])
    assert first["data"] == [3, 7]
    assert first["correlationId"] == r.json()["correlation"]
