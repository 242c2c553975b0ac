"""The config rough edges a v1 user hit on Azure's samples (pure: no packaging, no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeship.errors import InputError
from edgeship.local_services import script_error
from edgeship.packager.config import (
    check_module_name,
    derive_module_name,
    load_deployment_config,
    load_inference_config,
)


def test_a_permissive_model_name_gives_a_dns_label_for_cloud_targets_and_stays_for_local() -> None:
    assert derive_module_name("sklearn_regression_model.pkl", "aci") == "sklearn-regression-model-pkl"
    assert derive_module_name("My__Model", "iotedge") == "my-model"
    assert derive_module_name("sklearn_regression_model.pkl", "local") == "sklearn_regression_model.pkl"
    assert derive_module_name("digits", "aks") == "digits"
    with pytest.raises(InputError, match="pass -n sklearn-regression-model-pkl"):
        check_module_name("sklearn_regression_model.pkl", "aks", given=True)


def test_azure_cli_sample_layout_resolves_from_the_current_folder(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``--ic .azureml/inferenceconfig.json`` with ``"condaFile": ".azureml/conda_dependencies.yml"``."""
    (tmp_path / ".azureml").mkdir()
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (tmp_path / ".azureml" / "conda_dependencies.yml").write_text(
        "dependencies:\n  - python=3.11\n  - pip:\n    - azureml-defaults\n    - numpy\n")
    ic = tmp_path / ".azureml" / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "runtime": "python",
                              "condaFile": ".azureml/conda_dependencies.yml", "sourceDirectory": None}))
    monkeypatch.chdir(tmp_path)
    config = load_inference_config(Path(".azureml/inferenceconfig.json"))
    assert config.entry_script == (tmp_path / "score.py").resolve()
    assert config.conda_file == (tmp_path / ".azureml" / "conda_dependencies.yml").resolve()
    assert config.requirements == ("numpy",)


def test_compute_target_is_warned_not_refused(tmp_path: Path) -> None:
    dc = tmp_path / "deploymentconfig.json"
    dc.write_text(json.dumps({"computeType": "aks", "ComputeTarget": "akscomputetarget"}))
    config = load_deployment_config(dc)
    assert config.compute_type == "aks"
    assert any("ComputeTarget ignored" in w for w in config.warnings)


def test_the_scripts_own_error_is_found_in_a_service_log() -> None:
    log = (
        "[supervisor] started the scoring server (pid 1, restart 0)\n"
        "Traceback (most recent call last):\n  File \"score.py\", line 5, in <module>\n"
        "ModuleNotFoundError: No module named 'sklearn'\n"
        "[supervisor] the scoring server exited with code 1; restarting in 1 s\n"
    )
    assert script_error(log) == "ModuleNotFoundError: No module named 'sklearn'"
    assert script_error("Serving score on http://127.0.0.1:5001 (1 worker)\n") is None


def _bundle_sources(tmp_path: Path, entry: str = "score.py") -> list[str]:
    import shutil
    import tarfile

    from edgeship.demo.release import wheel_cache_dir
    from edgeship.packager.bundle import build_bundle

    wheels = tmp_path / "wheelhouse"
    wheels.mkdir(exist_ok=True)
    wheel = next(iter(sorted(wheel_cache_dir().glob("*.whl"))), None)
    if wheel is None:  # a cold machine: any real wheel will do, the bundle only lists it
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "pip", "download", "mdurl==0.1.2", "--no-deps", "-q", "-d",
                        str(wheels)], check=True, timeout=120)
    else:
        shutil.copy(wheel, wheels / wheel.name)
    out = tmp_path / "out" / "bundle.tar"
    build_bundle(out, models=[], wheelhouse=wheels, source_dir=tmp_path / "src", entry_script=Path(entry))
    with tarfile.open(out) as tar:
        return sorted(m.name for m in tar.getmembers() if m.name.startswith("src/") and m.isfile())


def test_amlignore_then_gitignore_leave_files_out_of_the_source_directory(tmp_path: Path) -> None:
    """A trained outputs/ (ignored by the sample's .gitignore) no longer lands in src/; .amlignore wins over it."""
    src = tmp_path / "src"
    (src / "outputs").mkdir(parents=True)
    (src / "outputs" / "model.pkl").write_bytes(b"x" * 100)
    (src / "data").mkdir()
    (src / "data" / "train.csv").write_text("a,b\n")
    (src / "data" / "labels.txt").write_text("0\n")
    (src / "score.py").write_text("def init():\n    pass\n")
    (src / ".gitignore").write_text("outputs/\n*.csv\n")
    assert _bundle_sources(tmp_path) == ["src/.gitignore", "src/data/labels.txt", "src/score.py"]
    (src / ".amlignore").write_text("data/\n")
    assert _bundle_sources(tmp_path) == ["src/.amlignore", "src/.gitignore", "src/outputs/model.pkl", "src/score.py"]
    (src / ".amlignore").write_text("*.py\n")
    with pytest.raises(Exception, match=r"entry script score\.py is left out of the source directory"):
        _bundle_sources(tmp_path)


def test_package_refuses_an_unusable_module_name_before_building_anything(tmp_path: Path) -> None:
    """The filed case: the name was refused only after ~14 s of wheelhouse, without saying to pass -n."""
    import time

    from edgeship.packager.package import PackageRequest, package_module
    from edgeship.registry import Model, ModelRef
    from edgeship.signing import Keyring
    from edgeship.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    ws.create()
    Keyring(ws).create("release")
    (tmp_path / "sklearn_regression_model.pkl").write_bytes(b"model bytes")
    Model.register(ws, tmp_path / "sklearn_regression_model.pkl", "sklearn_regression_model.pkl")
    began = time.monotonic()
    with pytest.raises(InputError, match=r"Module name 'Ridge_Model' \(-n/--name\) is not usable for target aks.*"
                                         r"pass -n ridge-model"):
        package_module(ws, PackageRequest(models=[ModelRef("sklearn_regression_model.pkl", 1)], target="aks",
                                          output=tmp_path / "out", name="Ridge_Model", image=False))
    assert time.monotonic() - began < 5  # no wheelhouse was built
    assert not (ws.cache_dir / "wheels").exists() and not (tmp_path / "out").exists()
