"""The hub and real agents over a real Mosquitto: devices join and leave deployments by their tags.

Everything is the product's own path: ``HubServer`` (SQLite, MQTT bridge, REST API),
three ``edgeship agent run`` processes with the process runtime, modules packaged and
signed by ``edgeship.packager`` (the demo's release side), scoring over HTTP.
Agent-level refusals (replay, expiry, unknown keys, tampering, broker restarts,
kills) are in ``tests/agent``; here the hub decides and the devices follow.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto
from parts import port_block

from edgeship.demo.model import sample_request
from edgeship.demo.release import Release, ReleaseSide
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.services import ModuleRefSpec

pytestmark = pytest.mark.slow

TAGS = {
    "dev-a": {"site": "lab", "arch": "amd64"},
    "dev-b": {"site": "lab", "arch": "arm64"},
    "dev-c": {"site": "field", "arch": "amd64"},
}
WAIT = 180.0  # seconds: the first install builds a venv per device


@dataclass
class Fleet:
    hub: HubServer
    releases: dict[int, Release]
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def module(self, device_id: str) -> dict[str, Any] | None:
        view = self.hub.services.fleet.get_device(device_id)
        state = view.reported.state if view.reported else {}
        entry = (state.get("modules") or {}).get("digits")
        return entry if isinstance(entry, dict) else None

    def wait(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for device_id, process in self.agents.items():
                assert process.poll() is None, f"agent {device_id} exited: {self.logs[device_id].read_text()[-3000:]}"
            if check():
                return
            time.sleep(0.2)
        tails = {d: p.read_text()[-1500:] for d, p in self.logs.items()}
        raise AssertionError(f"timed out waiting for {what}; agent logs: {tails}")

    def serving(self, device_id: str, version: int) -> bool:
        module = self.module(device_id)
        return bool(module and module.get("version") == version and module.get("status") == "running")

    def has_nothing(self, device_id: str) -> bool:
        view = self.hub.services.fleet.get_device(device_id)
        if view.reported is None or view.desired is None:
            return False
        state = view.reported.state
        return state.get("lastAppliedSequence") == view.desired.sequence and not state.get("modules")


def _score(port: int) -> list[int]:
    request, _ = sample_request()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/score",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as reply:
        return [int(p) for p in json.loads(reply.read())["predictions"]]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    broker = Mosquitto(root / "mosquitto").start()
    try:  # the broker goes even when the release or the hub fails to start
        release_side = ReleaseSide(root / "release", console=_quiet())
        releases = {1: release_side.release(1), 2: release_side.release(2)}
        hub = HubServer(
            HubConfig(
                workspace=release_side.workspace.root,
                trust_root=release_side.trust_root_file,
                broker_url=broker.url,
                port=0,
            )
        ).start()
        fleet = Fleet(hub, releases)
        ports = port_block(40 * len(TAGS))
        try:
            for version in releases:
                hub.services.catalog.upload_from_workspace(release_side.workspace.root, "digits", version)
            for index, (device_id, tags) in enumerate(TAGS.items()):
                hub.services.fleet.create_device(device_id, tags)
                folder = root / "agents" / device_id
                folder.mkdir(parents=True)
                config = folder / "agent.toml"
                config.write_text(
                    f'device_id = "{device_id}"\nhub_url = "{hub.api_url}"\n'
                    f"trust_root = {json.dumps(str(release_side.trust_root_file))}\n"
                    f"data_dir = {json.dumps(str(folder / 'data'))}\n"
                    f'runtime = "process"\nreconcile_interval = 1\ntelemetry_interval = 2\n'
                    f"port_range = [{ports + 40 * index}, {ports + 40 * index + 39}]\n"
                    f'\n[broker]\nurl = "{broker.url}"\n'
                )
                fleet.logs[device_id] = folder / "agent.log"
                with fleet.logs[device_id].open("wb") as log:
                    fleet.agents[device_id] = subprocess.Popen(
                        [sys.executable, "-m", "edgeship", "agent", "run", "--config", str(config),
                         "--stop-modules-on-exit"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
            yield fleet
        finally:
            for process in fleet.agents.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in fleet.agents.values():
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            hub.stop()
    finally:
        broker.stop()


def _quiet() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def test_a_deployment_reaches_only_the_devices_its_condition_selects(fleet: Fleet) -> None:
    fleet.hub.services.deployments.create_deployment("lab", "tags.site = 'lab'", [ModuleRefSpec("digits", 1)],
                                                     priority=10)
    fleet.wait("dev-a and dev-b to serve digits:1", lambda: fleet.serving("dev-a", 1) and fleet.serving("dev-b", 1))
    fleet.wait("dev-c to apply its empty document", lambda: fleet.has_nothing("dev-c"))
    _, labels = sample_request()
    for device_id in ("dev-a", "dev-b"):
        module = fleet.module(device_id)
        assert module is not None
        assert _score(module["port"]) == labels
    status = fleet.hub.services.deployments.deployment_status("lab")
    assert status.counts() == {"targeted": 2, "applied": 2, "reportingSuccess": 2, "reportingFailure": 0}


def test_retagging_moves_a_device_into_and_out_of_the_deployment(fleet: Fleet) -> None:
    old_port = (fleet.module("dev-b") or {})["port"]
    fleet.hub.services.fleet.update_tags("dev-c", {"site": "lab", "arch": "amd64"})
    fleet.hub.services.fleet.update_tags("dev-b", {"site": "field", "arch": "arm64"})
    fleet.wait("dev-c to gain digits:1", lambda: fleet.serving("dev-c", 1))
    fleet.wait("dev-b to lose digits", lambda: fleet.has_nothing("dev-b"))
    assert not _answers(old_port), "dev-b's module still answers after the device left the deployment"
    module = fleet.module("dev-c")
    assert module is not None and _score(module["port"]) == sample_request()[1]


def test_a_higher_priority_layer_wins_per_module_and_deleting_it_falls_back(fleet: Fleet) -> None:
    # dev-a (lab, amd64) and dev-c (lab, amd64) run v1; only amd64 lab devices get the v2 layer
    fleet.hub.services.deployments.create_deployment(
        "amd64-canary", "tags.site = 'lab' AND tags.arch = 'amd64' AND deviceId = 'dev-a'",
        [ModuleRefSpec("digits", 2)], priority=20,
    )
    fleet.wait("dev-a to serve digits:2", lambda: fleet.serving("dev-a", 2))
    assert fleet.serving("dev-c", 1), "dev-c is not in the canary layer and must keep v1"
    fleet.hub.services.deployments.delete_deployment("amd64-canary")
    fleet.wait("dev-a to fall back to digits:1", lambda: fleet.serving("dev-a", 1))
