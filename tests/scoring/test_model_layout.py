"""Models laid out as Azure ML lays them out: AZUREML_MODEL_DIR, Model.get_model_path, the data collector."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SCRIPTS, Server, run_cli

from edgeship.registry import Model, ModelRef
from edgeship.scoring.layout import lay_out_models
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


def test_a_layout_killed_half_way_leaves_no_half_model_and_the_next_one_is_whole(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    ws.create()
    folder = tmp_path / "big"
    folder.mkdir()
    for index in range(1000):  # long enough to copy that the kill lands while it runs
        (folder / f"part-{index:04d}.bin").write_bytes(os.urandom(2048))
    Model.register(ws, folder, "big")
    root = tmp_path / "layout"
    script = ("import sys; from pathlib import Path; from edgeship.workspace import Workspace; "
              "from edgeship.registry import ModelRef; from edgeship.scoring.layout import lay_out_models; "
              "lay_out_models(Workspace.at(Path(sys.argv[1])), [ModelRef('big', 1)], Path(sys.argv[2]))")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", script, str(ws.root), str(root)])
    name_dir = root / "azureml-models" / "big"
    deadline = time.monotonic() + 60
    while not (name_dir.is_dir() and any(name_dir.iterdir())) and process.poll() is None:
        assert time.monotonic() < deadline, "the layout never started"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    version_dir = name_dir / "1"
    if version_dir.exists():  # the kill came after the rename: then it is whole
        assert len(list((version_dir / "big").iterdir())) == 1000
    [deployed] = lay_out_models(ws, [ModelRef("big", 1)], root)
    assert deployed.path == version_dir / "big" and len(list(deployed.path.iterdir())) == 1000
    assert [p.name for p in name_dir.iterdir()] == ["1"]  # the killed run's scratch folder is gone
