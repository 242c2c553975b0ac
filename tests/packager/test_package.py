"""edgeship package: real wheelhouse and bundle, signed, stored; bad input leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeship.errors import ConfigError, InputError, PackagingError
from edgeship.modules.store import ModuleStore
from edgeship.modules.verify import local_trust_root, verify_module_dir
from edgeship.packager.package import KEYS_FILE, PackageRequest, package_module
from edgeship.registry import ModelRef

DIGITS = [ModelRef("digits", 1)]


def _cli(project: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGESHIP_HOME": str(project.workspace.root), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeship", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def packaged(digits_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("pkg") / "digits-aks"
    request = PackageRequest(models=DIGITS, output=out, inference_config=digits_project.ic,
                             deployment_config=digits_project.dc, target="aks", image=False)
    return package_module(digits_project.workspace, request)


def test_packaged_module_verifies_and_is_stored(packaged: Any, digits_project: Any) -> None:
    verified = verify_module_dir(packaged.output, local_trust_root(digits_project.workspace))
    manifest = verified.manifest
    assert manifest.target == "aks" and manifest.entry_script == "score.py"
    assert [(m.name, m.version) for m in manifest.models] == [("digits", 1)]
    assert {f.path for f in manifest.files} == {"bundle.tar", KEYS_FILE, "targets/kubernetes.yaml"}
    assert manifest.auth_enabled and manifest.openapi_digest is not None
    assert manifest.resources.cpu == 0.5 and manifest.resources.memory_gb == 1
    stored = ModuleStore(digits_project.workspace).get(manifest.name, manifest.version)
    verify_module_dir(stored.directory, local_trust_root(digits_project.workspace))
    assert (packaged.output / KEYS_FILE).stat().st_mode & 0o077 == 0
    assert any("azureml-defaults" in w for w in packaged.warnings)


def test_same_inputs_give_the_same_bundle_digest(packaged: Any, digits_project: Any, tmp_path: Path) -> None:
    again = package_module(
        digits_project.workspace,
        PackageRequest(models=DIGITS, output=tmp_path / "again", inference_config=digits_project.ic,
                       deployment_config=digits_project.dc, target="aks", image=False),
    )
    assert again.manifest.version == packaged.manifest.version + 1
    assert again.manifest.bundle.digest == packaged.manifest.bundle.digest
    assert (tmp_path / "again" / "bundle.tar").read_bytes() == (packaged.output / "bundle.tar").read_bytes()
    assert again.manifest.environment.lock_digest == packaged.manifest.environment.lock_digest


def test_cli_verify_reports_tampering_in_one_sentence(packaged: Any, digits_project: Any, tmp_path: Path) -> None:
    ok = _cli(digits_project, "module", "verify", str(packaged.output))
    assert ok.returncode == 0 and "OK module digits" in ok.stdout
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(packaged.output, copy)
    bundle = copy / "bundle.tar"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    bad = _cli(digits_project, "module", "verify", str(copy))
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: Artifact bundle.tar does not match the signed manifest")


def test_unversioned_model_is_refused(digits_project: Any, tmp_path: Path) -> None:
    result = _cli(digits_project, "package", "-m", "digits", "-o", str(tmp_path / "o"), "--no-image")
    assert result.returncode == 1 and "NAME:VERSION" in result.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_model_version_leaves_nothing(digits_project: Any, tmp_path: Path) -> None:
    before = [m.ref for m in ModuleStore(digits_project.workspace).list()]
    with pytest.raises(Exception, match="digits:99 does not exist"):
        package_module(digits_project.workspace,
                       PackageRequest(models=[ModelRef("digits", 99)], output=tmp_path / "o", image=False))
    assert not (tmp_path / "o").exists()
    assert [m.ref for m in ModuleStore(digits_project.workspace).list()] == before


def test_unknown_config_key_is_named(digits_project: Any, tmp_path: Path) -> None:
    dc = tmp_path / "deploymentconfig.json"
    dc.write_text('{"computeType": "ACI", "containerResourceRequirement": {"cpu": 1}}')
    with pytest.raises(ConfigError, match="containerResourceRequirement"):
        package_module(digits_project.workspace,
                       PackageRequest(models=DIGITS, output=tmp_path / "o", inference_config=digits_project.ic,
                                      deployment_config=dc, image=False))
    assert not (tmp_path / "o").exists()


def test_failing_wheelhouse_releases_the_version_and_writes_nothing(digits_project: Any, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (project / "requirements.txt").write_text("")
    ic = project / "inferenceconfig.json"
    ic.write_text('{"entryScript": "score.py", "sourceDirectory": ".", "condaFile": "env.yml"}')
    (project / "env.yml").write_text("dependencies:\n  - pip:\n    - edgeship-no-such-package-xyz==0.0.1\n")
    store = ModuleStore(digits_project.workspace)
    before = [m.ref for m in store.list()]
    with pytest.raises(PackagingError, match="edgeship-no-such-package-xyz"):
        package_module(digits_project.workspace,
                       PackageRequest(models=DIGITS, output=tmp_path / "o", inference_config=ic, image=False,
                                      name="broken"))
    assert not (tmp_path / "o").exists()
    assert [m.ref for m in store.list()] == before
    assert not list(tmp_path.glob(".o.building-*"))


def test_missing_release_key_says_how_to_create_one(tmp_path: Path, digits_project: Any) -> None:
    from edgeship.registry import Model
    from edgeship.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    ws.create()
    Model.register(ws, digits_project.model_file, "digits")
    with pytest.raises(InputError, match="edgeship keys create --role release"):
        package_module(ws, PackageRequest(models=DIGITS, output=tmp_path / "o", image=False))


def test_output_folder_with_user_files_is_refused_untouched(digits_project: Any, tmp_path: Path) -> None:
    out = tmp_path / "userdir"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    with pytest.raises(InputError, match="holds files that are not a module"):
        package_module(digits_project.workspace, PackageRequest(models=DIGITS, output=out, image=False))
    assert (out / "thesis.txt").read_text() == "precious"


def test_current_folder_is_refused_as_output(digits_project: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="current folder"):
        package_module(digits_project.workspace, PackageRequest(models=DIGITS, output=Path("."), image=False))
    assert (tmp_path / "keep.txt").exists()
