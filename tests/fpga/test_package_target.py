"""``edgeship package --target fpga`` packages int8 variants only, and says how to make one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Case

from edgeship.errors import InputError
from edgeship.fpga.variant import VARIANT_TAG
from edgeship.modules.store import ModuleStore
from edgeship.packager.package import FPGA_VARIANT_TAG, PackageRequest, package_module
from edgeship.registry import Model, ModelRef
from edgeship.signing import Keyring
from edgeship.workspace import Workspace

REFUSAL = r"Model cnn:1 is not an int8 FPGA variant \(no tag variant=fpga-int8\); run 'edgeship fpga quantize"


@pytest.fixture
def signed_workspace(workspace: Workspace) -> Workspace:
    Keyring(workspace).create("release")
    return workspace


def test_the_packager_and_the_variant_agree_on_the_tag() -> None:
    assert FPGA_VARIANT_TAG == VARIANT_TAG


def test_target_fpga_refuses_an_fp32_model(signed_workspace: Workspace, tmp_path: Path, cnn_case: Case) -> None:
    Model.register(signed_workspace, cnn_case.path, "cnn")
    request = PackageRequest(models=[ModelRef("cnn", 1)], output=tmp_path / "out", target="fpga", image=False)
    with pytest.raises(InputError, match=REFUSAL) as info:
        package_module(signed_workspace, request)
    assert str(info.value).count(". ") == 0  # one sentence
    assert not (tmp_path / "out").exists()
    assert ModuleStore(signed_workspace).list() == []


def test_compute_type_fpga_refuses_an_fp32_model(signed_workspace: Workspace, tmp_path: Path, cnn_case: Case) -> None:
    Model.register(signed_workspace, cnn_case.path, "cnn")
    dc = tmp_path / "deploymentconfig.json"
    dc.write_text(json.dumps({"computeType": "fpga"}))
    request = PackageRequest(models=[ModelRef("cnn", 1)], output=tmp_path / "out", deployment_config=dc, image=False)
    with pytest.raises(InputError, match=REFUSAL):
        package_module(signed_workspace, request)


def test_target_fpga_refuses_a_cpu_variant(signed_workspace: Workspace, tmp_path: Path, cnn_case: Case) -> None:
    Model.register(signed_workspace, cnn_case.path, "cnn")
    Model.register(
        signed_workspace, cnn_case.path, "cnn", tags={"variant": VARIANT_TAG, "parent": "cnn:1", "scales": "float"}
    )
    request = PackageRequest(models=[ModelRef("cnn", 2)], output=tmp_path / "out", target="fpga", image=False)
    with pytest.raises(InputError, match=r"cnn:2 is an int8 CPU variant \(scales=float\) that FPGAs cannot run"):
        package_module(signed_workspace, request)


def test_target_fpga_packages_a_tagged_variant(signed_workspace: Workspace, tmp_path: Path, cnn_case: Case) -> None:
    Model.register(signed_workspace, cnn_case.path, "cnn")
    tags = {"variant": VARIANT_TAG, "parent": "cnn:1", "scales": "pow2"}
    Model.register(signed_workspace, cnn_case.path, "cnn", tags=tags)
    request = PackageRequest(models=[ModelRef("cnn", 2)], output=tmp_path / "out", target="fpga", image=False)
    result = package_module(signed_workspace, request)
    assert result.manifest.variant == VARIANT_TAG
    assert result.manifest.execution_providers[0] == "VitisAIExecutionProvider"
