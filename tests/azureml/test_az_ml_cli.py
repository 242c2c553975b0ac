"""``edgeship model deploy`` / ``edgeship deploy --model`` / ``edgeship service run|keys`` on Azure's sample files."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from parts import free_port
from v1_world import DATA, V1World

CLOUD = DATA / "deploy-to-cloud"
LOCAL = DATA / "deploy-to-local"
REQUEST = {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}
# the pip packages of the notebooks' CondaDependencies.create(...), as a conda file
CONDA = ("name: project_environment\ndependencies:\n  - pip:\n    - azureml-defaults\n"
         "    - inference-schema[numpy-support]\n    - joblib\n    - numpy\n    - scikit-learn\n")


@pytest.fixture(scope="module", autouse=True)
def _initialised(v1: V1World) -> None:
    """An az ml user has a workspace and a release key ('edgeship init', 'edgeship keys create')."""
    for args in (("init",), ("keys", "create", "--role", "release")):
        done = v1.run(v1.root, *args)
        assert done.returncode == 0, done.stderr


def _project(v1: V1World, name: str, score: str) -> None:
    work = v1.folder(name, (LOCAL if score == "local" else CLOUD) / "score.py")
    (work / "conda.yml").write_text(CONDA)
    (work / "inferenceconfig.json").write_text(json.dumps({"entryScript": "score.py", "condaFile": "conda.yml"}))
    (work / "deploymentconfig.json").write_text(json.dumps({"computeType": "local", "authEnabled": True,
                                                            "scoringTimeoutMs": 60000}))


def test_model_deploy_then_service_run_keys_and_regen(v1: V1World) -> None:
    _project(v1, "cli", "cloud")
    work = v1.root / "cli"
    registered = v1.run(work, "model", "register", "-n", "sklearn_regression_model.pkl",
                        "-p", "sklearn_regression_model.pkl")
    assert registered.returncode == 0, registered.stderr
    port = free_port()
    args = ["model", "deploy", "-n", "diabetes", "-m", "sklearn_regression_model.pkl:1", "--ic",
            "inferenceconfig.json", "--dc", "deploymentconfig.json", "--port", str(port)]
    done = v1.run(work, *args)
    assert done.returncode == 0, done.stderr
    assert f"Scoring URI: http://127.0.0.1:{port}/score" in done.stdout
    assert "Packaged and signed module sklearn_regression_model.pkl:1." in done.stderr  # permissive name kept locally

    again = v1.run(work, *args)  # checked before any packaging
    assert again.returncode == 1 and "Service diabetes exists; pass --overwrite" in again.stderr

    ran = v1.run(work, "service", "run", "-n", "diabetes", "--input-data", json.dumps(REQUEST))
    assert ran.returncode == 0, ran.stderr
    expected = joblib.load(work / "sklearn_regression_model.pkl").predict(np.array(REQUEST["data"])).tolist()
    assert np.allclose(json.loads(ran.stdout), expected)

    keys = json.loads(v1.run(work, "service", "keys", "-n", "diabetes", "--json").stdout)
    regen = v1.run(work, "service", "keys", "-n", "diabetes", "--regen", "Secondary", "--json")
    assert regen.returncode == 0, regen.stderr
    new = json.loads(regen.stdout)
    assert new["primaryKey"] == keys["primaryKey"] and new["secondaryKey"] != keys["secondaryKey"]
    record = json.loads((v1.home / "services" / "diabetes.json").read_text())
    assert record["keys"] == [new["primaryKey"], new["secondaryKey"]]
    assert record["env"] == {"SCORING_TIMEOUT_MS": "60000"}  # the dc's scoringTimeoutMs, kept across the restart
    (work / "request.json").write_text(json.dumps(REQUEST))
    updated = v1.run(work, "service", "update", "-n", "diabetes", "--module", "sklearn_regression_model.pkl:1")
    assert updated.returncode == 0, updated.stderr
    assert f"Scoring URI: http://127.0.0.1:{port}/score" in updated.stdout  # same port, same keys, same timeout
    after = json.loads((v1.home / "services" / "diabetes.json").read_text())
    assert after["keys"] == record["keys"] and after["env"] == record["env"]
    again_ran = v1.run(work, "service", "run", "-n", "diabetes", "-d", "@request.json")
    assert again_ran.returncode == 0 and np.allclose(json.loads(again_ran.stdout), expected)
    bad = v1.run(work, "service", "run", "-n", "diabetes", "--input-data", "@missing.json")
    assert bad.returncode == 1 and "cannot read missing.json" in bad.stderr
    assert v1.run(work, "service", "delete", "diabetes").returncode == 0


def test_deploy_of_a_script_that_cannot_import_stops_at_once_with_its_error(v1: V1World) -> None:
    """The rough edge as filed: 'edgeship deploy' restarted it until its 120 s timeout ("did not answer on port")."""
    _project(v1, "broken", "local")
    work = v1.root / "broken"
    assert v1.run(work, "model", "register", "-n", "ridge", "-p", "sklearn_regression_model.pkl").returncode == 0
    done = v1.run(work, "deploy", "-n", "broken", "--model", "ridge:1", "--ic", "inferenceconfig.json",
                  "--runtime", "process", "--timeout", "120")
    assert done.returncode == 1
    assert "the entry script failed with 'ImportError: cannot import name 'joblib' from 'sklearn.externals'" in (
        done.stderr)
    assert "did not answer" not in done.stderr
    v1.run(work, "service", "delete", "broken")
