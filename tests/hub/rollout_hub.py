"""A hub for the tests of the rollout surface (REST and CLI): its REST app on uvicorn, devices behind a MemoryLink.

The services are the real ones over SQLite (``HubWorld.services``); only the device
side is in memory. A device "reports" through :meth:`RolloutHub.report`, the entry
point the MQTT bridge's worker calls (``Fleet.record_reported``), and the engine runs
through :meth:`RolloutHub.tick`, what the hub's timer calls; nothing is patched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hub_workspace import make_hub_workspace
from hub_world import HubWorld
from rest_server import serving

from edgeship.hub.api import OperatorTokens, create_app, create_token
from edgeship.hub.services import HubServices
from edgeship.workspace import Workspace

__all__ = ["RolloutHub", "rollout_hub"]


@dataclass
class RolloutHub:
    url: str
    services: HubServices
    world: HubWorld
    workspace: Workspace
    operator: str  # the token of "ops", an operator
    reader: str  # the token of "dashboard", read-only

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.operator}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def create(self, name: str, rollout: dict[str, Any] | None, condition: str = "tags.site = 'lab'") -> httpx.Response:
        body: dict[str, Any] = {"name": name, "targetCondition": condition, "modules": [{"name": "digits",
                                                                                          "version": 1}]}
        if rollout is not None:
            body["rollout"] = rollout
        with self.client() as c:
            return c.post("/deployments", json=body)

    def waves(self, deployment: str) -> dict[int, list[str]]:
        """1-based wave -> its devices, as the engine planned them."""
        out: dict[int, list[str]] = {}
        for device, wave in sorted(self.services.rollouts.members(deployment).items()):
            out.setdefault(wave, []).append(device)
        return out

    def report(self, device_id: str, *, code: int = 200, running: bool = True) -> None:
        """The device's report for its newest document: digits:1 running (or failed), with ``code``."""
        desired = self.services.fleet.get_device(device_id).desired
        assert desired is not None, device_id
        self.services.fleet.record_reported(device_id, {
            "schemaVersion": 1, "deviceId": device_id, "lastAppliedSequence": desired.sequence,
            "status": {"code": code, "description": "ok" if code == 200 else "failed"},
            "modules": {"digits": {"version": 1, "status": "running" if running else "failed"}},
        })

    def tick(self) -> int:
        return self.services.rollouts.tick()

    def received(self, deployment: str) -> set[str]:
        """Devices that were ever published a document naming ``deployment``."""
        names = set()
        for outgoing in self.world.published:
            if deployment in _payload(outgoing.envelope).get("deployments", []):
                names.add(outgoing.device_id)
        return names


def _payload(envelope: bytes) -> dict[str, Any]:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))  # type: ignore[no-any-return]


@contextmanager
def rollout_hub(root: Path, devices: int = 6) -> Iterator[RolloutHub]:
    """A served hub with module digits:1 and ``devices`` devices dev-0.. tagged site=lab."""
    ws, world = make_hub_workspace(root / "hubws", modules=1)
    world.root.mkdir(parents=True, exist_ok=True)
    services = world.services(f"sqlite:///{world.root / 'hub.db'}")
    services.catalog.upload_from_workspace(ws.root, "digits", 1)
    for n in range(devices):
        services.fleet.create_device(f"dev-{n}", {"site": "lab"})
    operator = create_token(services.store, "ops")
    reader = create_token(services.store, "dashboard", role="read-only")
    try:
        with serving(create_app(services, OperatorTokens(services.store))) as url:
            yield RolloutHub(url, services, world, ws, operator, reader)
    finally:
        services.store.close()
