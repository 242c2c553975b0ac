"""The hub's REST API over real HTTP: uvicorn on a free port in a thread, httpx as the client."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import pytest
from hub_world import HubWorld

from edgeship.agent.decide import accept_document
from edgeship.hub.api import create_token
from edgeship.hub.services import HubServices
from edgeship.modules.manifest import MANIFEST_FILE, ModuleManifest
from edgeship.modules.store import ModuleStore
from edgeship.workspace import Workspace


@pytest.fixture
def client(base_url: str, service: HubServices) -> Iterator[httpx.Client]:
    token = create_token(service.store, "tests")
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        yield c


@pytest.fixture
def packaged(world: HubWorld, workspace: Workspace) -> Workspace:
    """A packaging workspace holding digits:1 and digits:2 (signed by the world's release key)."""
    modules = ModuleStore(workspace)
    for _ in range(2):
        version = modules.reserve("digits")
        built = world.module("digits", version)
        manifest = ModuleManifest.from_bytes((built / MANIFEST_FILE).read_bytes())
        modules.commit(manifest, built, "sha256:" + hashlib.sha256(manifest.to_bytes()).hexdigest())
    return workspace


def _upload(client: httpx.Client, ws: Workspace, version: int) -> dict:  # type: ignore[type-arg]
    response = client.post("/modules", json={"workspace": str(ws.root), "name": "digits", "version": version})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_openapi_is_served_and_operator_routes_need_a_token(base_url: str, client: httpx.Client) -> None:
    spec = httpx.get(f"{base_url}/openapi.json").json()
    assert {"/devices", "/modules", "/deployments/{deployment_id}", "/blobs/{digest}"} <= set(spec["paths"])
    missing = httpx.get(f"{base_url}/devices")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in missing.json()["detail"]
    wrong = httpx.get(f"{base_url}/devices", headers={"Authorization": "Bearer esh_not-a-token"})
    assert wrong.status_code == 401
    assert client.get("/devices").json() == []


def test_deploy_by_tags_then_retag_and_delete(
    world: HubWorld, client: httpx.Client, packaged: Workspace
) -> None:
    _upload(client, packaged, 1)
    for device_id, site in (("dev-1", "lab"), ("dev-2", "lab"), ("dev-3", "home")):
        assert client.post("/devices", json={"id": device_id, "tags": {"site": site}}).status_code == 201
    created = client.post("/deployments", json={
        "name": "lab-digits", "targetCondition": "tags.site = 'lab'", "priority": 5,
        "modules": [{"name": "digits", "version": 1, "settings": {"port": 5001}}],
    })
    assert created.status_code == 201, created.text
    assert created.json()["status"]["counts"] == {
        "targeted": 2, "applied": 2, "reportingSuccess": 0, "reportingFailure": 0,
    }

    envelope = client.get("/devices/dev-1/desired").content
    doc = accept_document(envelope, world.trust_root(), "dev-1", None, datetime.now(timezone.utc)).document
    assert list(doc.modules) == ["digits"] and doc.deployments == ["lab-digits"]

    moved = client.put("/devices/dev-1/tags", json={"tags": {"site": "home"}})
    assert moved.status_code == 200 and moved.json()["desiredSequence"] == 3
    shown = client.get("/deployments/lab-digits").json()
    assert [d["deviceId"] for d in shown["status"]["devices"]] == ["dev-2"]
    assert client.get("/devices").json()[0]["tags"] == {"site": "home"}

    assert client.delete("/deployments/lab-digits").status_code == 204
    assert client.get("/deployments/lab-digits").status_code == 404
    assert client.get("/deployments").json() == []


def test_errors_map_to_http_statuses_with_a_message(
    world: HubWorld, client: httpx.Client, packaged: Workspace
) -> None:
    _upload(client, packaged, 1)
    bad = client.post("/deployments", json={"name": "x", "targetCondition": "tags.a = ", "modules": [
        {"name": "digits", "version": 1}]})
    assert bad.status_code == 400 and "column" in bad.json()["detail"]
    assert bad.json()["type"] == "TargetConditionError"
    unknown = client.post("/deployments", json={"name": "x", "targetCondition": "*", "modules": [
        {"name": "digits", "version": 7}]})
    assert unknown.status_code == 404
    assert client.post("/devices", json={"id": "dev-1"}).status_code == 201
    assert client.post("/devices", json={"id": "dev-1"}).status_code == 409
    assert client.get("/devices/ghost").status_code == 404
    assert client.post("/devices", json={"id": "a/b"}).status_code == 400
    assert client.post("/devices", json={"identity": "dev-1"}).status_code == 422
    assert client.post("/modules", json={"workspace": str(packaged.root), "name": "nope"}).status_code == 404

    tampered = packaged.modules_dir / "digits" / "2" / "bundle.tar"
    tampered.write_bytes(b"evil")
    refused = client.post("/modules", json={"workspace": str(packaged.root), "name": "digits", "version": 2})
    assert refused.status_code == 422 and "bundle.tar" in refused.json()["detail"]


def test_blobs_resume_with_http_ranges(
    base_url: str, client: httpx.Client, packaged: Workspace
) -> None:
    module = _upload(client, packaged, 1)
    url = base_url + module["bundle"]
    whole = httpx.get(url)  # no token: devices fetch blobs
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    digest = module["bundle"].removeprefix("/blobs/")
    assert "sha256:" + hashlib.sha256(whole.content).hexdigest() == digest
    assert whole.headers["etag"] == f'"{digest}"'
    size = len(whole.content)

    cut = size // 3  # an interrupted download: resume from the byte after the last one received
    with httpx.stream("GET", url) as partial:
        received = b""
        for chunk in partial.iter_bytes(cut):
            received = chunk[:cut]
            break
    rest = httpx.get(url, headers={"Range": f"bytes={len(received)}-", "If-Range": f'"{digest}"'})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
    assert received + rest.content == whole.content

    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    middle = httpx.get(url, headers={"Range": "bytes=5-9"})
    assert middle.content == whole.content[5:10] and middle.headers["content-length"] == "5"
    for bad in (f"bytes={size}-", "bytes=9-5", "bytes=abc", "bytes=-0"):
        refused = httpx.get(url, headers={"Range": bad})
        assert refused.status_code == 416, bad
        assert refused.headers["content-range"] == f"bytes */{size}"
    assert httpx.get(url, headers={"Range": "bytes=0-1,4-5"}).status_code == 200
    assert httpx.get(url, headers={"Range": "bytes=0-1", "If-Range": '"other"'}).status_code == 200
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    assert httpx.get(f"{base_url}/blobs/sha256:{'0' * 64}").status_code == 404
    assert httpx.get(f"{base_url}/blobs/md5:abc").status_code == 400


def test_telemetry_and_methods_routes_without_a_broker(client: httpx.Client, service: HubServices) -> None:
    assert client.post("/devices", json={"id": "dev-1"}).status_code == 201
    assert client.get("/devices/dev-1/telemetry").json() == []
    assert client.get("/devices/dev-1/telemetry?limit=0").status_code == 422
    assert client.get("/devices/ghost/telemetry").status_code == 404
    listed = client.get("/devices").json()[0]
    assert listed["online"] is None and listed["lastSeen"] is None
    no_broker = client.post("/devices/dev-1/methods/restart", json={"module": "digits"})
    assert no_broker.status_code == 503 and "no MQTT connection" in no_broker.json()["detail"]
    assert client.post("/devices/dev-1/methods/a%20b", json={}).status_code == 400
    assert client.post("/devices/ghost/methods/restart", json={}).status_code == 404
    assert client.post("/devices/dev-1/methods/restart", json=[1]).status_code == 422
