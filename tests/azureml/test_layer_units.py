"""The v1 layer's objects in-process: workspace on first use, configs as az ml files, refusals (no packaging)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from edgeship.azureml import installed


@pytest.fixture
def azureml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("EDGESHIP_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with installed():
        import azureml.core

        yield azureml.core


def test_workspace_is_created_on_first_use_with_a_release_key(azureml: ModuleType, tmp_path: Path) -> None:
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "ml-ws"}))
    ws = azureml.Workspace.from_config()
    assert (ws.name, ws.resource_group, ws.subscription_id) == ("ml-ws", "rg", "sub")
    from edgeship.signing import Keyring

    assert [k.role for k in Keyring(ws.edgeship).list()] == ["release"]
    assert ws.edgeship.root == (tmp_path / "home").resolve()
    assert azureml.Workspace.get("other").edgeship.root == ws.edgeship.root  # one workspace, one key
    assert len(Keyring(ws.edgeship).list()) == 1


def test_environment_and_inference_config_become_the_file_az_ml_read(azureml: ModuleType, tmp_path: Path) -> None:
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.core.model import InferenceConfig

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init():\n    pass\n")
    (tmp_path / "requirements.txt").write_text("numpy>=1.24  # arrays\n\nscikit-learn\n")
    env = azureml.Environment.from_pip_requirements("pip-env", "requirements.txt")
    env.python.conda_dependencies.add_pip_package("joblib")
    env.environment_variables["MODE"] = "fast"
    config = InferenceConfig(entry_script="score.py", source_directory="src", environment=env).to_file()
    assert config["entryScript"] == "score.py" and config["sourceDirectory"] == str((tmp_path / "src").resolve())
    assert config["environment"]["python"]["condaDependencies"]["dependencies"] == [
        {"pip": ["numpy>=1.24", "scikit-learn", "joblib"]}]
    assert config["environment"]["environmentVariables"] == {"MODE": "fast"}
    created = CondaDependencies.create(pip_packages=["azureml-defaults", "numpy"], python_version="3.11")
    assert created.pip_packages == ["azureml-defaults", "numpy"] and "python=3.11" in created.conda_packages
    with pytest.raises(Exception, match=r"entry_script nosuch\.py not found"):
        InferenceConfig(entry_script="nosuch.py", source_directory="src", environment=env)


def test_deployment_configurations_use_azure_cli_keys(azureml: ModuleType) -> None:
    from azureml.core.webservice import AciWebservice, AksWebservice, LocalWebservice

    aci = AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1, auth_enabled=True, tags={"a": "b"})
    assert aci.to_file() == {"computeType": "ACI", "containerResourceRequirements": {"cpu": 1, "memoryInGB": 1},
                             "authEnabled": True}
    aks = AksWebservice.deploy_configuration(autoscale_enabled=False, num_replicas=2, scoring_timeout_ms=5000)
    assert aks.to_file() == {"computeType": "AKS", "autoScaler": {"autoscaleEnabled": False}, "numReplicas": 2,
                             "scoringTimeoutMs": 5000}
    with pytest.raises(TypeError, match="unexpected keyword argument 'cpu'"):
        AciWebservice.deploy_configuration(cpu=1)
    with pytest.raises(Exception, match="give a TCP port"):
        LocalWebservice.deploy_configuration(port=70000)


def test_what_cannot_be_honoured_says_what_to_use(azureml: ModuleType, tmp_path: Path) -> None:
    from azureml.exceptions import UserErrorException, WebserviceException

    ws = azureml.Workspace.from_config()
    with pytest.raises(WebserviceException, match="WebserviceNotFound"):
        azureml.Webservice(ws, "nosuch")
    with pytest.raises(UserErrorException, match=r"Environment\.get.*curated Azure environment.*add_pip_package"):
        azureml.Environment.get(ws, "AzureML-Minimal")
    with pytest.raises(UserErrorException, match=r"Model\.package is not supported.*edgeship package"):
        azureml.Model.package(ws, "x", [])
    (tmp_path / "m.onnx").write_bytes(b"not really onnx")
    model = azureml.Model.register(ws, "m.onnx", "m")
    with pytest.raises(UserErrorException, match=r"input_dataset=<Dataset>\) is not supported.*JSON-lines"):
        azureml.Model.profile(ws, "p", [model], None, input_dataset=object())
    with pytest.raises(UserErrorException, match=r"azureml\.core\.Experiment is not supported"):
        azureml.Experiment  # noqa: B018 - the attribute access is the call
