"""A real hub process killed between a change's commit and its documents finishes the delivery when restarted.

``edgeship hub serve`` runs as a process on a real Mosquitto; ``EDGESHIP_FAULT=
hub.after-change-commit`` makes it SIGKILL itself right after ``POST /deployments``
committed the deployment (and its re-evaluation intent), before any document is
signed: the crash of issue 13 (0 of 300 documents sent, the retry 409, only the
10-minute refresh timer delivering). A probe subscribed to every device's ``desired``
topic plays the 300 devices. The refresh timer (600 s) never runs in this test.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_process import WAIT, HubProcess
from hub_workspace import make_hub_workspace
from mqtt_probe import Probe, Received

from edgeship.hub.api import create_token
from edgeship.hub.faults import AFTER_CHANGE_COMMIT, FAULT_ENV
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.store import HubStore, Outbox, sqlite_url

pytestmark = pytest.mark.slow

DEVICES = 300


@pytest.fixture
def hub_setup(tmp_path: Path, mosquitto: Any) -> Iterator[tuple[Path, str]]:
    """A workspace whose hub has module digits:1 and DEVICES devices tagged site=lab; and an operator token."""
    ws, _world = make_hub_workspace(tmp_path / "ws")
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        hub.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        hub.services.fleet.create_devices((f"dev-{i:03}", {"site": "lab"}) for i in range(DEVICES))
        token = create_token(hub.store, "tests")
    yield ws.root, token


class DesiredWatch:
    """The newest ``desired`` document per device as a device would see it (modules by name)."""

    def __init__(self, url: str) -> None:
        self.modules: dict[str, set[str]] = {}
        self.cond = threading.Condition()
        self.probe = Probe(url)
        self.probe.handlers.append(self._on)
        self.probe.subscribe("edgeship/v1/devices/+/desired")

    def _on(self, _probe: Probe, message: Received) -> None:
        if not message.payload:
            return
        document = json.loads(base64.b64decode(json.loads(message.payload)["payload"]))
        with self.cond:
            self.modules[document["deviceId"]] = set(document["modules"])
            self.cond.notify_all()

    def wait(self, what: str, check: Callable[[dict[str, set[str]]], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check(self.modules):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; {sum(map(bool, self.modules.values()))} served"
                self.cond.wait(left)


def _served(modules: dict[str, set[str]]) -> int:
    return sum(1 for names in modules.values() if "digits" in names)


def test_a_hub_killed_right_after_a_deployment_commits_delivers_it_to_every_device_at_restart(
    hub_setup: tuple[Path, str], mosquitto: Any, tmp_path: Path
) -> None:
    workspace, token = hub_setup
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": "lab", "targetCondition": "tags.site = 'lab'", "priority": 1,
            "modules": [{"name": "digits", "version": 1}]}  # fmt: skip
    watch = DesiredWatch(mosquitto.url)
    watch.wait("every device's first (empty) document", lambda m: len(m) == DEVICES)

    hub = HubProcess(workspace, mosquitto.url, tmp_path / "hub.log").start(**{FAULT_ENV: AFTER_CHANGE_COMMIT})
    with pytest.raises(httpx.TransportError):  # the hub dies while answering
        httpx.post(f"{hub.url}/deployments", json=body, headers=headers, timeout=30)
    assert hub.process is not None and hub.process.wait(10) == -signal.SIGKILL

    store = HubStore(sqlite_url(workspace))  # what the crash left: the deployment and its intent, no document
    try:
        assert [d.id for d in store.list_deployments()] == ["lab"]
        assert not any("lab" in d.deployments for d in store.latest_desired().values())
        assert [i.device_ids for i in Outbox(store).pending()] == [None]
    finally:
        store.close()
    assert _served(watch.modules) == 0

    hub.start()  # no fault this time
    try:
        watch.wait(f"all {DEVICES} devices to get digits", lambda m: _served(m) == DEVICES)
        retry = httpx.post(f"{hub.url}/deployments", json=body, headers=headers, timeout=30)
        assert retry.status_code == 409 and retry.json()["type"] == "AlreadyExistsError"
        status = httpx.get(f"{hub.url}/deployments/lab", headers=headers, timeout=30).json()["status"]
        assert status["counts"]["targeted"] == DEVICES
    finally:
        hub.stop()
        watch.probe.client.disconnect()
    store = HubStore(sqlite_url(workspace))
    try:
        assert Outbox(store).pending() == []
    finally:
        store.close()
