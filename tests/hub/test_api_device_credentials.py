"""The credential routes over real HTTP (uvicorn) and, for re-creation after delete, a real bridge and Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_workspace import make_hub_workspace
from hub_world import HubWorld
from mqtt_probe import Probe
from rest_server import serving

from edgeship.hub.api import OperatorTokens, create_app, create_token
from edgeship.hub.broker import verify_password
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.services import HubServices
from edgeship.mqtt import device_topic


@pytest.fixture
def service(tmp_path: Path) -> HubServices:
    world = HubWorld(tmp_path / "hub")
    world.root.mkdir(parents=True)
    return world.services(f"sqlite:///{world.root / 'hub.db'}")


@pytest.fixture
def client(service: HubServices) -> Iterator[httpx.Client]:
    token = create_token(service.store, "tests")
    with serving(create_app(service, OperatorTokens(service.store))) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        yield c


def test_create_rotate_and_delete_over_rest(client: httpx.Client, service: HubServices) -> None:
    created = client.post("/devices", json={"id": "dev-1", "tags": {"site": "lab"}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "dev-1" and body["tags"] == {"site": "lab"} and body["desiredSequence"] == 1
    assert body["credentials"]["kind"] == "password" and body["credentials"]["username"] == "dev-1"
    assert body["broker"] == "unmanaged"
    first = body["credentials"]["password"]
    assert "password" not in client.get("/devices/dev-1").text and first not in client.get("/devices").text

    rotated = client.post("/devices/dev-1/credentials/rotate")
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["credentials"]["password"]
    stored = DeviceCredentials(service.fleet).password_hashes()["dev-1"]
    assert verify_password(second, stored) and not verify_password(first, stored)

    assert client.delete("/devices/dev-1").json() == {"deleted": "dev-1", "broker": "unmanaged"}
    assert client.get("/devices/dev-1").status_code == 404
    for response in (client.delete("/devices/dev-1"), client.post("/devices/dev-1/credentials/rotate")):
        assert response.status_code == 404 and "dev-1" in response.json()["detail"]


def test_a_certificate_without_a_hub_ca_and_an_unknown_kind_are_refused(client: httpx.Client,
                                                                        service: HubServices) -> None:
    no_ca = client.post("/devices", json={"id": "dev-c", "credentials": "certificate"})
    assert no_ca.status_code == 400 and "no CA" in no_ca.json()["detail"]
    assert client.post("/devices", json={"id": "dev-c", "credentials": "token"}).status_code == 422
    assert service.store.list_devices() == []  # nothing half-made


def test_a_deleted_device_id_created_again_gets_its_new_first_document(tmp_path: Path, mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "hubws")
    shift = [timedelta(0)]  # an hour later, so the new first document differs from the deleted device's
    config = HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0,
                       clock=lambda: datetime.now(timezone.utc) + shift[0])
    with HubServer(config) as hub:
        hub.credentials.create_device("dev-1")
        hub.credentials.delete_device("dev-1")
        shift[0] = timedelta(hours=1)
        hub.credentials.create_device("dev-1")  # sequences start at 1 again
        probe = Probe(mosquitto.url)
        try:
            probe.subscribe(device_topic("dev-1", "desired"))
            desired = hub.services.fleet.get_device("dev-1").desired
            assert desired is not None and desired.sequence == 1
            assert probe.expect().payload == desired.envelope.encode()  # not the deleted device's retained one
        finally:
            probe.close()
