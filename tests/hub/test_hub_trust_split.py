"""The hub's half of the trust split: a deployment may choose modules and inert settings, nothing more.

Whatever could decide what code runs on a device (environment variables, a command,
container options) belongs to the release-signed module. The hub refuses it when a
deployment is created, over the service and over HTTP, and stores nothing; a
deployment an older hub stored with ``settings.env`` is issued without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from hub_world import HubWorld
from rest_server import serving

from edgeship.agent.decide import accept_document
from edgeship.errors import InputError
from edgeship.hub.api import OperatorTokens, create_app, create_token
from edgeship.hub.services import HubServices, ModuleRefSpec
from edgeship.hub.store import DeploymentRecord, ModuleRefRecord

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path)


@pytest.fixture
def hub(world: HubWorld, tmp_path: Path) -> HubServices:
    service = world.services(f"sqlite:///{tmp_path / 'hub.db'}", clock=lambda: T0)
    service.catalog.upload_module(world.module("digits", 1, image=False))
    service.fleet.create_device("dev-1", {"site": "lab"})
    return service


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"env": {"LD_PRELOAD": "/tmp/evil.so"}}, "env"),
        ({"env": {"PYTHONPATH": "/tmp/x"}, "port": 5001}, "env"),
        ({"command": ["sh", "-c", "id"]}, "command"),
        ({"createOptions": {"HostConfig": {"Privileged": True}}}, "createOptions"),
        ({"binds": ["/:/host"]}, "binds"),
        ({"networkMode": "host"}, "networkMode"),
        ({"user": "root"}, "user"),
        ({"port": True}, "port"),  # settings are typed strictly: no bool or text where a number belongs
        ({"port": "80"}, "port"),
    ],
)
def test_a_deployment_that_would_decide_code_is_refused_and_nothing_is_stored(
    world: HubWorld, hub: HubServices, settings: dict[str, object], named: str
) -> None:
    before = hub.fleet.get_device("dev-1").desired
    with pytest.raises(InputError, match=named):
        hub.deployments.create_deployment("evil", "*", [ModuleRefSpec("digits", 1, settings)])
    assert hub.deployments.list_deployments() == []
    assert hub.fleet.get_device("dev-1").desired == before


def test_inert_settings_reach_the_device(world: HubWorld, hub: HubServices) -> None:
    hub.deployments.create_deployment("lab", "*",
                                      [ModuleRefSpec("digits", 1, {"port": 5002, "restartPolicy": "always"})])
    desired = hub.fleet.get_device("dev-1").desired
    assert desired is not None
    accepted = accept_document(desired.envelope.encode(), world.trust_root(), "dev-1", None, T0)
    settings = accepted.document.modules["digits"].settings
    assert (settings.port, settings.restart_policy, settings.env) == (5002, "always", {})


def test_a_deployment_an_older_hub_stored_with_env_is_issued_without_it(
    world: HubWorld, hub: HubServices, caplog: pytest.LogCaptureFixture
) -> None:
    record = DeploymentRecord("legacy", "*", 0, T0, (ModuleRefRecord("digits", 1, {"env": {"MODE": "x"}}),))
    hub.store.add_deployment(record)  # as the previous release stored it, before the trust split
    with caplog.at_level(logging.WARNING, logger="edgeship.hub"):
        hub.fleet.create_device("dev-2")
    desired = hub.fleet.get_device("dev-2").desired
    assert desired is not None
    accepted = accept_document(desired.envelope.encode(), world.trust_root(), "dev-2", None, T0)
    assert accepted.document.modules["digits"].settings.env == {}
    assert "settings.env (MODE) is no longer sent to devices" in caplog.text


@pytest.fixture
def api(hub: HubServices) -> Iterator[httpx.Client]:
    token = create_token(hub.store, "operator")
    with serving(create_app(hub, OperatorTokens(hub.store))) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        yield client


def test_an_operator_token_cannot_set_environment_variables_over_http(api: httpx.Client, hub: HubServices) -> None:
    body = {"name": "evil", "targetCondition": "*",
            "modules": [{"name": "digits", "version": 1, "settings": {"env": {"LD_PRELOAD": "/tmp/evil.so"}}}]}
    response = api.post("/deployments", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "settings.env" in response.text or "env" in response.json()["detail"]
    assert "release-signed" in response.text
    assert api.get("/deployments").json() == []
