"""Operator-token roles, expiry and revocation over real HTTP (uvicorn on a free port, httpx).

The hub's token check gets a clock the test moves, so "expired" is decided by data,
not by waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from hub_world import HubWorld
from rest_server import serving

from edgeship.hub.api import OperatorTokens, create_app, create_token
from edgeship.hub.services import HubServices
from edgeship.hub.store import TokenStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path) -> HubServices:
    world = HubWorld(tmp_path / "hub")
    world.root.mkdir(parents=True)
    return world.services(f"sqlite:///{world.root / 'hub.db'}")


@pytest.fixture
def base_url(service: HubServices, clock: Clock) -> Iterator[str]:
    with serving(create_app(service, OperatorTokens(service.store, clock=clock))) as url:
        yield url


def _client(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture
def operator(base_url: str, service: HubServices) -> Iterator[httpx.Client]:
    with _client(base_url, create_token(service.store, "ops")) as client:
        assert client.post("/devices", json={"id": "dev-1", "tags": {"site": "lab"}}).status_code == 201
        yield client


@pytest.fixture
def reader(base_url: str, service: HubServices, operator: httpx.Client) -> Iterator[httpx.Client]:
    with _client(base_url, create_token(service.store, "dashboard", role="read-only")) as client:
        yield client


READS = ["/devices", "/devices/dev-1", "/devices/dev-1/desired", "/devices/dev-1/telemetry", "/modules",
         "/deployments", "/trust-root"]


def test_a_read_only_token_reads_everything(reader: httpx.Client, operator: httpx.Client) -> None:
    for path in READS:
        mine, theirs = reader.get(path), operator.get(path)
        assert mine.status_code == 200, (path, mine.text)
        assert mine.content == theirs.content, path


@pytest.mark.parametrize(("verb", "path", "body"), [
    ("POST", "/devices", {"id": "dev-2", "tags": {}}),
    ("PUT", "/devices/dev-1/tags", {"tags": {"site": "home"}}),
    ("POST", "/devices/dev-1/credentials/rotate", None),
    ("DELETE", "/devices/dev-1", None),
    ("POST", "/devices/dev-1/methods/restart", {"module": "digits"}),
    ("POST", "/deployments", {"name": "lab", "targetCondition": "tags.site = 'lab'", "priority": 1, "modules": []}),
    ("DELETE", "/deployments/lab", None),
    ("POST", "/modules", {"workspace": "/nowhere", "name": "digits"}),
    ("PUT", "/trust-root", None),
])
def test_a_read_only_token_changes_nothing_and_is_told_its_role(
    reader: httpx.Client, operator: httpx.Client, verb: str, path: str, body: object
) -> None:
    before = operator.get("/devices").json()
    answer = reader.request(verb, path, json=body)
    assert answer.status_code == 403, answer.text
    error = answer.json()
    assert error["type"] == "PermissionDeniedError"
    assert "'dashboard' has the 'read-only' role" in error["detail"]
    assert "--role operator" in error["detail"]
    assert operator.get("/devices").json() == before


def test_a_read_only_token_may_ask_a_device_for_its_logs(reader: httpx.Client) -> None:
    # No broker here, so the call itself fails with 503: past the role check, which is what is tested.
    answer = reader.post("/devices/dev-1/methods/logs", json={"module": "digits"})
    assert answer.status_code == 503, answer.text
    assert reader.post("/devices/dev-1/methods/restart", json={"module": "digits"}).status_code == 403


def test_an_operator_token_may_change_things(operator: httpx.Client) -> None:
    assert operator.put("/devices/dev-1/tags", json={"tags": {"site": "home"}}).status_code == 200
    assert operator.delete("/devices/dev-1").status_code == 200


def test_an_expired_token_is_refused_with_401_saying_so(base_url: str, service: HubServices, clock: Clock) -> None:
    token = create_token(service.store, "ci", role="read-only", expires=clock.now + timedelta(hours=1))
    with _client(base_url, token) as client:
        assert client.get("/devices").status_code == 200
        clock.now += timedelta(hours=1)
        answer = client.get("/devices")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.json()["type"] == "TokenExpiredError"
    assert "The operator token 'ci' expired at " in answer.json()["detail"]


def test_a_revoked_token_is_refused_on_its_next_request(base_url: str, service: HubServices, clock: Clock) -> None:
    token = create_token(service.store, "laptop")
    with _client(base_url, token) as client:
        assert client.post("/devices", json={"id": "dev-9", "tags": {}}).status_code == 201
        TokenStore(service.store).revoke("laptop", clock.now)
        refused = client.get("/devices")
        assert refused.status_code == 401
        assert refused.json()["type"] == "TokenRevokedError"
        assert "'laptop' was revoked at " in refused.json()["detail"]
        # revoked wins over the role: even a GET is refused
        assert client.get("/devices/dev-9").status_code == 401


def test_unknown_and_missing_tokens_are_refused_with_401(base_url: str) -> None:
    with _client(base_url, "esh_" + "x" * 43) as client:
        answer = client.get("/devices")
    assert answer.status_code == 401 and answer.json()["type"] == "AuthenticationError"
    assert "not valid on this hub" in answer.json()["detail"]
    assert httpx.get(f"{base_url}/devices").status_code == 401


def test_each_request_notes_when_the_token_was_last_used(reader: httpx.Client, service: HubServices,
                                                          clock: Clock) -> None:
    assert TokenStore(service.store).get("dashboard").last_used is None
    assert reader.get("/devices").status_code == 200
    assert TokenStore(service.store).get("dashboard").last_used == clock.now
    first = clock.now
    clock.now += timedelta(seconds=30)  # within a minute: not written again
    assert reader.get("/devices").status_code == 200
    assert TokenStore(service.store).get("dashboard").last_used == first
    clock.now += timedelta(minutes=1)
    assert reader.get("/devices").status_code == 200
    assert TokenStore(service.store).get("dashboard").last_used == clock.now
