"""The shared steps through the in-process hub (``ServicesHub``, as the demo uses them): ``ship`` is the one call
Azure ML's ``Model.deploy`` will make; each step is safe to repeat."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from rollout_hub import RolloutHub, rollout_hub

from edgeship.demo.release import wheel_cache_dir
from edgeship.errors import ReleaseError
from edgeship.registry import Model, ModelRef
from edgeship.release import PackageOptions, ServicesHub, deploy, ship, upload

MODEL_FILE = Path(__file__).resolve().parents[1] / "data" / "mnist-cntk-opset7.onnx"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RolloutHub]:
    with rollout_hub(tmp_path, devices=2) as served:
        (served.workspace.cache_dir / "wheels").symlink_to(wheel_cache_dir(), target_is_directory=True)
        yield served


@pytest.mark.slow
def test_ship_packages_signs_uploads_and_deploys_and_each_step_repeats_safely(hub: RolloutHub) -> None:
    ws = hub.workspace
    Model.register(ws, MODEL_FILE, "mnist", model_framework="onnx")
    target = ServicesHub(hub.services)
    module, created = ship(ws, target, [ModelRef("mnist", 1)], PackageOptions(image=False), deployment="lab",
                           target_condition="tags.site = 'lab'", priority=3,
                           rollout={"waves": "1,100%"})
    assert module.ref == "mnist:1" and (created.name, created.priority, created.modules) == ("lab", 3, (("mnist", 1),))
    assert created.rollout == "rolling-out" and created.detail["waves"] == 2
    assert hub.services.catalog.get_module("mnist", 1).manifest_digest == module.digest  # verified and stored

    upload(target, ws, module)  # the hub has it: no change
    again = deploy(target, "lab", "tags.site = 'lab'", [("mnist", 1)], 3, None)  # as after a lost answer
    assert again.name == "lab" and len(hub.services.deployments.list_deployments()) == 1
    with pytest.raises(ReleaseError, match=r"Deployment lab exists on the hub with mnist:1, not digits:1"):
        deploy(target, "lab", "tags.site = 'lab'", [("digits", 1)], 3, None)
