"""Azure's own v1 deployment notebooks, unedited, through ``edgeship azureml run`` (real packaging, real services)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
from parts import free_port
from v1_world import DATA, V1World

LOCAL = DATA / "deploy-to-local"
CLOUD = DATA / "deploy-to-cloud"
SAMPLE = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]])


def _value(stdout: str, label: str) -> list[float]:
    line = next(line for line in stdout.splitlines() if line.startswith(label + " "))
    return list(json.loads(line.split(" ", 1)[1]))


def test_local_notebook_registers_deploys_calls_reloads_and_deletes(v1: V1World) -> None:
    """register-model-deploy-local.ipynb with the working score.py of the same samples."""
    work = v1.folder("local", LOCAL / "deploy_local.py", LOCAL / "myenv.yml", CLOUD / "score.py")
    port = free_port()
    done = v1.run(work, "azureml", "run", "deploy_local.py", str(port))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = joblib.load(work / "sklearn_regression_model.pkl").predict(SAMPLE).tolist()
    assert np.allclose(_value(done.stdout, "RESULT"), expected)
    assert np.allclose(_value(done.stdout, "RELOADED"), expected)
    assert f"Local service port: {port}" in done.stdout
    assert f"STATE Healthy http://127.0.0.1:{port}/score http://127.0.0.1:{port}/swagger.json" in done.stdout
    assert "Registering model sklearn_regression_model_local" in done.stdout
    assert "not installing azureml-defaults" in done.stdout  # the packager's warning, printed as Azure prints
    assert not (v1.home / "services" / "test.json").exists()  # local_service.delete()


def test_aci_notebook_writes_a_signed_module_and_says_where(v1: V1World) -> None:
    """model-register-and-deploy.ipynb's custom-environment ACI deployment: written, verified, not run here."""
    work = v1.folder("cloud", CLOUD / "deploy_cloud.py", CLOUD / "score.py")
    done = v1.run(work, "azureml", "run", "deploy_cloud.py", env={"EDGESHIP_AZUREML_IMAGE": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    state = next(line for line in done.stdout.splitlines() if line.startswith("STATE "))
    assert state.startswith("STATE Packaged ")
    targets = Path(state.split(" ", 2)[2])
    aci = (targets / "aci.yaml").read_text()
    assert aci.startswith("# NOTE: the image edgeship/my-custom-env-service:1 was not built")
    assert "cpu: 1" in aci and "memoryInGB: 1" in aci
    assert "signed and its target files are in" in done.stdout  # wait_for_deployment(show_output=True)
    assert "REFUSED run() on ACI service my-custom-env-service is not supported" in done.stdout
    from edgeship.modules.verify import local_trust_root, verify_module_dir
    from edgeship.workspace import Workspace

    verified = verify_module_dir(targets.parent, local_trust_root(Workspace.at(v1.home)))
    assert verified.manifest.target == "aci" and verified.manifest.models[0].name == "my-sklearn-model"
    assert not (v1.home / "services" / "my-custom-env-service.json").exists()  # service.delete()


def test_the_layer_exists_only_inside_the_command(v1: V1World, tmp_path: Path) -> None:
    outside = subprocess.run([sys.executable, "-c", "import edgeship.azureml, edgeship.cli\nimport azureml"],
                             capture_output=True, text=True, check=False)
    assert "ModuleNotFoundError: No module named 'azureml'" in outside.stderr
    script = tmp_path / "datasets.py"
    script.write_text("from azureml.core import Workspace, Dataset\n")
    refused = v1.run(tmp_path, "azureml", "run", str(script))
    assert refused.returncode == 1
    assert "azureml.core.Dataset is not supported by edgeship's Azure ML v1 layer; keep data in files" in (
        refused.stderr)
    missing = v1.run(tmp_path, "azureml", "run", "nosuch.py")
    assert missing.returncode == 1 and "nosuch.py is not a file" in missing.stderr
