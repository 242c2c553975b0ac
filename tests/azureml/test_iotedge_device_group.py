"""``edgeship model deploy`` with computeType IOT and ``--device-group``: to a served hub, through the release's steps.

The hub is ``rollout_hub`` (tests/hub): the REST app on uvicorn over the real services with
devices dev-0..dev-5 tagged site=lab; the release side is the hub's own workspace (its release
key is the one the hub trusts), as in tests/release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from rollout_hub import rollout_hub

from edgeship.demo.release import wheel_cache_dir
from edgeship.registry import Model

MODEL_FILE = Path(__file__).resolve().parents[1] / "data" / "mnist-cntk-opset7.onnx"


def test_an_iot_edge_deployment_goes_to_a_hub_device_group(tmp_path: Path) -> None:
    with rollout_hub(tmp_path, devices=6) as hub:
        cache = wheel_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        (hub.workspace.cache_dir / "wheels").symlink_to(cache, target_is_directory=True)
        Model.register(hub.workspace, MODEL_FILE, "mnist_model.onnx", model_framework="onnx")
        dc = tmp_path / "deploymentconfig.json"
        dc.write_text(json.dumps({"computeType": "IOT"}))
        env = {"EDGESHIP_HOME": str(hub.workspace.root), "EDGESHIP_HUB_URL": hub.url,
               "EDGESHIP_HUB_TOKEN": hub.operator}
        args = [sys.executable, "-m", "edgeship", "model", "deploy", "-n", "lab-mnist", "-m", "mnist_model.onnx:1",
                "--dc", str(dc), "--no-image", "--device-group", "tags.site = 'lab'"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        assert "Packaged and signed module mnist-model-onnx:1." in done.stderr  # a DNS label from a permissive name
        assert "Deployment lab-mnist ships module mnist-model-onnx:1 to the devices where tags.site = 'lab'" in (
            done.stdout)
        with hub.client() as client:
            shown = client.get("/deployments/lab-mnist")
            assert shown.status_code == 200, shown.text
            assert [(m["name"], m["version"]) for m in shown.json()["modules"]] == [("mnist-model-onnx", 1)]
        dc.write_text(json.dumps({"computeType": "local"}))
        local = subprocess.run([*args[:6], "other", *args[7:]], capture_output=True, text=True, timeout=120,
                               check=False, env={**os.environ, **env})
        assert local.returncode == 1  # refused before any packaging
        assert "--device-group goes with computeType IOT (IoT Edge); this deploymentconfig is local" in local.stderr
