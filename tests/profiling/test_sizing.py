"""``--resources-from-profile``: a deployment config's cpu/memoryInGB replaced by a stored profile's recommendation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeship.errors import InputError
from edgeship.packager.package import PackageRequest, package_module
from edgeship.profiling import PROFILE_PROPERTY
from edgeship.profiling.sizing import resources_from_profile
from edgeship.registry import Model, ModelRef
from edgeship.signing import Keyring
from edgeship.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.at(tmp_path / "ws")
    ws.create()
    for name in ("a", "b"):
        (tmp_path / f"{name}.bin").write_bytes(name.encode())
        Model.register(ws, tmp_path / f"{name}.bin", name)
    return ws


def _profile(models: list[str], cpu: float | None, memory: float | None) -> str:
    return json.dumps({"models": models, "recommendedCpu": cpu, "recommendedMemoryInGB": memory,
                       "createdTime": "2026-12-05T13:00:00Z", "runtime": "docker"})


def test_the_recommendation_replaces_the_dc_values_and_says_so(ws: Workspace) -> None:
    model = Model.get(ws, "a", 1)
    model.add_properties({PROFILE_PROPERTY: _profile(["a:1"], 1.0, 0.5)})
    assert Model.get(ws, "a", 1).properties[PROFILE_PROPERTY] == model.properties[PROFILE_PROPERTY]
    cpu, memory, warnings = resources_from_profile([model], 0.1, 4.0)
    assert (cpu, memory) == (1.0, 0.5)
    assert warnings == ["cpu 1.0 and memoryInGB 0.5 come from the profile of 2026-12-05T13:00:00Z (docker runtime)"]


def test_a_process_runtime_profile_keeps_the_dc_cpu(ws: Workspace) -> None:
    model = Model.get(ws, "a", 1)
    model.add_properties({PROFILE_PROPERTY: _profile(["a:1"], None, 1.0)})
    cpu, memory, warnings = resources_from_profile([model], 0.25, None)
    assert (cpu, memory) == (0.25, 1.0)
    assert "recommends no cpu; cpu stays 0.25" in warnings[0]


def test_a_profile_of_other_models_is_refused(ws: Workspace) -> None:
    a, b = Model.get(ws, "a", 1), Model.get(ws, "b", 1)
    a.add_properties({PROFILE_PROPERTY: _profile(["a:1"], 1.0, 1.0)})
    with pytest.raises(InputError, match="needs a profile of exactly a:1, b:1"):
        resources_from_profile([a, b], None, None)
    with pytest.raises(InputError, match="edgeship model profile -m b:1 --input-data"):
        resources_from_profile([b], None, None)


def test_package_refuses_the_flag_without_a_deployment_config(ws: Workspace, tmp_path: Path) -> None:
    Keyring(ws).create("release")
    request = PackageRequest(models=[ModelRef("a", 1)], output=tmp_path / "out", resources_from_profile=True)
    with pytest.raises(InputError, match="give --dc"):
        package_module(ws, request)
    assert not (tmp_path / "out").exists()
