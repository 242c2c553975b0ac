"""Names reserved for the hub (``hub``, ``hub-*``) never become a device: REST, CLI, credentials, broker config.

Before the reservation ``POST /devices {"id": "hub"}`` answered 201, and with
``--credentials certificate`` that device's certificate logged in as the hub's broker
user (issue 12). Each path where a name becomes a broker identity is tried here
against the real thing: uvicorn, the CLI, ``edgeship hub broker-config`` as a process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent.parent / "hub"))

from hub_workspace import make_hub_workspace

from edgeship.cli import app
from edgeship.errors import ConfigError, InputError
from edgeship.hub.api import create_token
from edgeship.hub.broker import hash_password, parse_password_file
from edgeship.hub.broker.reload import BrokerState, ManagedBroker
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.store import CredentialStore, HubStore, sqlite_url
from edgeship.workspace import Workspace

REASON = "is reserved for the hub's broker identities"
HUB_NAMES = ("hub", "hub-2", "HUB-x", "Hub")


@pytest.fixture
def hub(tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    ws, _world = make_hub_workspace(tmp_path / "hubws")
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as server:
        monkeypatch.setenv("EDGESHIP_HUB_URL", server.api_url)
        monkeypatch.setenv("EDGESHIP_HUB_TOKEN", create_token(server.store, "tests"))
        yield server


@pytest.fixture
def api(hub: HubServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {os.environ['EDGESHIP_HUB_TOKEN']}"}
    with httpx.Client(base_url=hub.api_url, headers=headers, timeout=30) as client:
        yield client


def test_post_devices_refuses_a_hub_name_with_400_and_creates_nothing(api: httpx.Client, hub: HubServer) -> None:
    for name in HUB_NAMES:
        for kind in ("password", "certificate"):
            answer = api.post("/devices", json={"id": name, "credentials": kind})
            assert answer.status_code == 400, answer.text
            assert REASON in answer.json()["detail"] and "choose another id" in answer.json()["detail"]
        assert api.get(f"/devices/{name}").status_code == 404
    assert CredentialStore(hub.store).active() == {}
    assert api.post("/devices", json={"id": "hubble", "credentials": "certificate"}).status_code == 201


def test_device_create_refuses_a_hub_name_in_one_sentence(hub: HubServer) -> None:
    for args in (["hub-1"], ["hub", "--certificate"]):
        result = CliRunner().invoke(app, ["device", "create", *args])
        assert result.exit_code != 0 and isinstance(result.exception, InputError)
        message = str(result.exception)
        assert message.startswith(f"Device id '{args[0]}' {REASON} ('hub' and names starting with 'hub-'")
        assert message.endswith("choose another id.") and message.count(". ") == 0
    assert [d.id for d in hub.store.list_devices()] == []


def test_bulk_creation_and_credentials_refuse_a_hub_name_and_a_legacy_one_can_only_be_deleted(
    api: httpx.Client, hub: HubServer
) -> None:
    with pytest.raises(InputError, match=REASON):
        hub.services.fleet.create_devices([("dev-1", {}), ("hub-9", {})])
    assert [d.id for d in hub.store.list_devices()] == []  # all or none
    hub.store.add_device("hub-old", {}, datetime.now(timezone.utc))  # as a hub before the reservation let it
    for issue in (hub.credentials.create_credentials, hub.credentials.rotate_credentials):
        with pytest.raises(InputError, match=REASON):
            issue("hub-old", "certificate")
    rotate = api.post("/devices/hub-old/credentials/rotate")
    assert rotate.status_code == 400 and REASON in rotate.json()["detail"]
    assert CredentialStore(hub.store).active() == {}
    assert api.get("/devices/hub-old").status_code == 200  # it can still be found ...
    assert api.delete("/devices/hub-old").json()["deleted"] == "hub-old"  # ... and deleted


def _broker_config(workspace: Workspace, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "hub.pw").write_text("hub-secret\n")
    return subprocess.run([sys.executable, "-m", "edgeship", "hub", "broker-config", "-o", str(tmp_path / "out"),
                           "--hub-password-file", str(tmp_path / "hub.pw"), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})  # fmt: skip


def test_broker_config_refuses_a_device_with_a_hub_name_and_a_hub_user_not_named_like_the_hub(
    workspace: Workspace, tmp_path: Path
) -> None:
    store = HubStore(sqlite_url(workspace.root))
    store.add_devices([("dev-a", {}), ("hub-old", {})], datetime.now(timezone.utc))
    store.close()
    legacy = _broker_config(workspace, tmp_path)
    assert legacy.returncode == 1 and "hub-old carry a name reserved for the hub's broker identities" in legacy.stderr
    assert "'edgeship device delete ID'" in legacy.stderr and not (tmp_path / "out" / "passwd").exists()

    store = HubStore(sqlite_url(workspace.root))
    CredentialStore(store).delete_device("hub-old", datetime.now(timezone.utc))
    store.close()
    wrong = _broker_config(workspace, tmp_path, "--hub-username", "cloud")
    assert wrong.returncode == 1 and "Hub broker user 'cloud' must be 'hub' or 'hub-<name>'" in wrong.stderr
    two = _broker_config(workspace, tmp_path, "--hub-username", "hub", "--hub-username", "hub-2")
    assert two.returncode == 0, two.stderr
    assert "for 1 devices (0 by password, 1 by certificate only) and the hub user(s) hub, hub-2." in two.stdout
    assert set(parse_password_file((tmp_path / "out" / "passwd").read_text())) == {"hub", "hub-2"}
    acl = (tmp_path / "out" / "acl").read_text().splitlines()
    assert [line for line in acl if line.startswith("user ")] == ["user hub", "user hub-2"]


def test_the_managed_broker_keeps_other_hub_processes_and_leaves_a_legacy_hub_named_device_out(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    replica = hash_password("hub-2-secret")
    (folder / "passwd").write_text(f"hub:{hash_password('hub-secret')}\nhub-2:{replica}\n")
    with pytest.raises(ConfigError, match="Hub broker user 'cloud' must be 'hub' or 'hub-<name>'"):
        ManagedBroker(folder, hub_username="cloud", hub_password="x")
    broker = ManagedBroker(folder)
    state = BrokerState(("dev-a", "hub-old"), {"dev-a": hash_password("a"), "hub-old": hash_password("forged")})
    assert broker.apply(lambda: state) == "written"
    lines = parse_password_file((folder / "passwd").read_text())
    assert set(lines) == {"hub", "hub-2", "dev-a"} and lines["hub-2"] == replica
    assert [line for line in (folder / "acl").read_text().splitlines() if line.startswith("user ")] == [
        "user hub", "user hub-2"
    ]
