"""Each 5xx the schemathesis run found, pinned as a plain case on SQLite and PostgreSQL (uvicorn, httpx).

The fuzz test (``test_api_fuzz.py``) draws a random seed each run; these cases are the
ones it found, so they keep failing loudly if the fix is undone, whatever the seed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from hub_workspace import make_hub_workspace
from rest_server import serving

from edgeship.deployment import MAX_SEQUENCE
from edgeship.hub.api import OperatorTokens, create_app, create_token
from edgeship.hub.api.app import MAX_REQUEST_BYTES
from edgeship.hub.broker import open_ca
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.server import CA_DIR, TRUST_ROOT_FILE
from edgeship.hub.services import HubServices
from edgeship.hub.trust import CHAIN_DIR, TrustRootFiles
from edgeship.signing import TRUST_ROOT_PAYLOAD_TYPE
from edgeship.workspace import Workspace


@pytest.fixture
def hub_service() -> list[HubServices]:
    """Where the ``hub`` fixture puts its services, for the tests that change the store underneath."""
    return []


@pytest.fixture
def hub(tmp_path: Path, hub_url: str, hub_service: list[HubServices]) -> Iterator[tuple[httpx.Client, Workspace]]:
    """A hub over ``hub_url`` (both backends) holding ``digits:1``, ``dev-1`` and deployment ``lab``."""
    ws, world = make_hub_workspace(tmp_path / "ws", modules=1)
    world.root.mkdir(parents=True, exist_ok=True)
    service = world.services(hub_url, trust_files=TrustRootFiles(ws.root / TRUST_ROOT_FILE, ws.root / CHAIN_DIR))
    hub_service.append(service)
    ca = open_ca(ws.root / CA_DIR)  # device certificates, as 'hub serve' issues them
    credentials = DeviceCredentials(service.fleet, ca=lambda: ca)
    app = create_app(service, OperatorTokens(service.store), credentials)
    headers = {"Authorization": f"Bearer {create_token(service.store, 'tests')}"}
    try:
        with serving(app) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            assert client.post("/modules", json={"workspace": str(ws.root), "name": "digits"}).status_code == 201
            assert client.post("/devices", json={"id": "dev-1", "tags": {"site": "lab"}}).status_code == 201
            created = client.post("/deployments", json={"name": "lab", "targetCondition": "tags.site = 'lab'",
                                                        "modules": [{"name": "digits", "version": 1}]})
            assert created.status_code == 201, created.text
            yield client, ws
    finally:
        service.store.close()


def _refused(response: httpx.Response, status: int, *words: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and isinstance(body["type"], str)
    for word in words:
        assert word in body["detail"], body["detail"]
    return body  # type: ignore[no-any-return]


def test_upload_refuses_an_empty_relative_or_missing_workspace_with_4xx(
    hub: tuple[httpx.Client, Workspace], tmp_path: Path
) -> None:
    client, _ws = hub
    for path in ("", ".", "relative/ws", "/a\x00b"):
        body = _refused(client.post("/modules", json={"workspace": path, "name": "digits"}), 422,
                        "body.workspace", "absolute path")
        assert body["type"] == "RequestValidationError"
        assert body["errors"][0]["loc"] == ["body", "workspace"]  # type: ignore[index]
        assert "input" not in body["errors"][0]  # type: ignore[index]  # the refused value is not echoed
    not_a_workspace = tmp_path / "empty"
    not_a_workspace.mkdir()
    for path in (str(not_a_workspace), str(tmp_path / "missing"), "/" + "x" * 300):
        _refused(client.post("/modules", json={"workspace": path, "name": "digits"}), 400,
                 "No edgeship workspace", "'edgeship package'")
    broken = Workspace.at(tmp_path / "broken")
    broken.root.mkdir()
    broken.db_path.write_bytes(b"not a database" * 100)  # was a sqlite3.DatabaseError: 500
    _refused(client.post("/modules", json={"workspace": str(broken.root), "name": "digits"}), 400,
             "registry database")


def test_names_with_a_nul_or_too_long_are_400_not_a_database_error(hub: tuple[httpx.Client, Workspace]) -> None:
    client, _ws = hub
    _refused(client.get("/modules", params={"name": "dig\x00its"}), 400, "Invalid model name")
    _refused(client.get("/modules/dig%00its/1"), 400, "Invalid model name")
    _refused(client.get("/modules/" + "d" * 129 + "/1"), 400, "at most 128")
    _refused(client.get("/deployments/la%00b"), 400, "Deployment name")
    _refused(client.delete("/deployments/la%00b"), 400, "Deployment name")
    bad_module = {"name": "x", "targetCondition": "*", "modules": [{"name": "dig\x00its", "version": 1}]}
    _refused(client.post("/deployments", json=bad_module), 400, "Invalid model name")
    nul_condition = {"name": "x", "targetCondition": "tags.site = 'l\x00ab'", "modules": [{"name": "digits",
                                                                                           "version": 1}]}
    _refused(client.post("/deployments", json=nul_condition), 400, "NUL")
    assert client.get("/modules", params={"name": "digits"}).status_code == 200


def test_integers_past_the_stores_columns_are_422(hub: tuple[httpx.Client, Workspace]) -> None:
    client, ws = hub
    huge = 2**31
    _refused(client.get(f"/modules/digits/{huge}"), 422, "path.version")
    _refused(client.post("/modules", json={"workspace": str(ws.root), "name": "digits", "version": huge}), 422)
    for body in ({"name": "x", "targetCondition": "*", "priority": huge, "modules": [{"name": "digits",
                                                                                       "version": 1}]},
                 {"name": "x", "targetCondition": "*", "modules": [{"name": "digits", "version": huge}]}):
        _refused(client.post("/deployments", json=body), 422, "less than or equal to 2147483647")
    assert client.get(f"/modules/digits/{huge - 1}").status_code == 404


def test_a_direct_method_timeout_too_short_to_answer_is_422(hub: tuple[httpx.Client, Workspace]) -> None:
    client, _ws = hub
    for timeout in ("5e-324", "0.05", "0", "-1", "nan", "301"):
        _refused(client.post("/devices/dev-1/methods/restart", params={"timeout": timeout}, json={}), 422,
                 "query.timeout")
    no_broker = client.post("/devices/dev-1/methods/restart", params={"timeout": "0.1"}, json={})
    _refused(no_broker, 503, "no MQTT connection")


def test_unknown_paths_and_methods_answer_the_one_error_shape(hub: tuple[httpx.Client, Workspace]) -> None:
    client, _ws = hub
    body = _refused(client.get("/nowhere"), 404, "GET /nowhere")
    assert body["type"] == "HTTPException"
    _refused(client.patch("/devices"), 405, "PATCH /devices")


def test_a_trust_root_nested_past_the_recursion_limit_is_422_not_500(hub: tuple[httpx.Client, Workspace]) -> None:
    client, _ws = hub
    deep = b"[" * 100_000  # under the 256 KiB limit; json.loads raised RecursionError (500)
    _refused(client.put("/trust-root", content=deep), 422, "Envelope is not valid JSON")
    inner = {"payloadType": TRUST_ROOT_PAYLOAD_TYPE, "payload": base64.b64encode(deep).decode(), "signatures": []}
    _refused(client.put("/trust-root", json=inner), 422, "Trust root is not valid JSON")
    assert client.get("/trust-root").json()["version"] == 1


def test_the_same_create_sent_at_once_is_one_201_and_409s_never_a_5xx(hub: tuple[httpx.Client, Workspace]) -> None:
    client, ws = hub
    requests = [
        ("/devices", {"id": "dev-race", "tags": {"site": "lab"}}),
        ("/deployments", {"name": "race", "targetCondition": "tags.site = 'lab'", "priority": 3,
                          "modules": [{"name": "digits", "version": 1}]}),
        ("/modules", {"workspace": str(ws.root), "name": "digits", "version": 1}),
    ]
    for path, body in requests:
        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(client.post, path, json=body) for _ in range(8)]
        statuses = sorted(a.result().status_code for a in answers)
        assert all(s < 500 for s in statuses), (path, statuses)
        if path == "/modules":  # the same build again is a no-op
            assert statuses == [201] * 8, statuses
        else:
            assert statuses == [201] + [409] * 7, (path, statuses)


def test_nan_and_infinity_are_400_not_a_database_error(hub: tuple[httpx.Client, Workspace]) -> None:
    client, _ws = hub
    json_type = {"content-type": "application/json"}  # Python's JSON parser (and so FastAPI's) takes NaN
    for number in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        tags = b'{"tags": {"site": "lab", "floor": ' + number + b"}}"
        _refused(client.put("/devices/dev-1/tags", content=tags, headers=json_type), 400, "tags.floor", "finite")
        created = b'{"id": "dev-nan", "tags": {"floor": ' + number + b"}}"
        _refused(client.post("/devices", content=created, headers=json_type), 400, "finite")
        args = b'{"tail": ' + number + b"}"
        _refused(client.post("/devices/dev-1/methods/logs", content=args, headers=json_type), 400, "plain JSON")
    assert client.get("/devices/dev-1").json()["tags"] == {"site": "lab"}
    assert client.get("/devices/dev-nan").status_code == 404


def test_a_body_over_a_mib_is_413_before_the_token_is_read(hub: tuple[httpx.Client, Workspace]) -> None:
    client, _ws = hub
    big = b'{"id": "dev-big", "tags": {"a": "' + b"x" * MAX_REQUEST_BYTES + b'"}}'
    json_type = {"content-type": "application/json"}
    anonymous = httpx.post(f"{client.base_url}/devices", content=big, headers=json_type)
    assert anonymous.status_code == 413  # FastAPI reads a body before the token dependency runs
    assert client.post("/devices", content=big, headers=json_type).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        for _ in range(20):
            yield b"[" * (128 * 1024)

    assert client.put("/trust-root", content=chunks()).status_code == 413
    _refused(client.put("/trust-root", content=b"x" * (300 * 1024)), 400, "over 262144 bytes")
    assert client.get("/devices/dev-big").status_code == 404


def test_a_device_out_of_document_sequences_is_409_naming_the_fix(
    hub: tuple[httpx.Client, Workspace], hub_service: list[HubServices]
) -> None:
    client, _ws = hub
    with hub_service[0].store.engine.begin() as conn:  # 68 years of documents at one a second, in one UPDATE
        conn.execute(sqlalchemy.text("UPDATE devices SET last_sequence = :n WHERE id = 'dev-1'"), {"n": MAX_SEQUENCE})
    body = _refused(client.put("/devices/dev-1/tags", json={"tags": {"site": "home"}}), 409, "re-create the device")
    assert body["type"] == "SequenceExhaustedError"


def test_a_certificate_for_an_id_longer_than_a_common_name_is_400_and_no_device(
    hub: tuple[httpx.Client, Workspace],
) -> None:
    client, _ws = hub
    fits, long = "c" * 64, "d" * 65  # device ids may have 128 characters, a certificate's CN 64
    assert client.post("/devices", json={"id": fits, "credentials": "certificate"}).status_code == 201
    _refused(client.post("/devices", json={"id": long, "credentials": "certificate"}), 400, "RFC 5280", "password")
    assert client.get(f"/devices/{long}").status_code == 404  # created and removed again: both or neither
    assert client.post("/devices", json={"id": long}).status_code == 201  # a password login has no such limit
    assert client.post(f"/devices/{long}/credentials/rotate").json()["credentials"]["kind"] == "password"


def test_a_trailing_newline_never_passes_an_id_rule(hub: tuple[httpx.Client, Workspace]) -> None:
    """Python's ``$`` matches before a final newline: 'dev-2' plus a newline was a valid device id, broker username
    (a line of Mosquitto's password file) and topic segment. Every id rule now matches the whole string."""
    client, ws = hub
    _refused(client.post("/devices", json={"id": "dev-2\n"}), 400, "Device id")
    _refused(client.get("/devices/dev-1%0A"), 400, "Device id")
    _refused(client.put("/devices/dev-1%0A/tags", json={"tags": {}}), 400, "Device id")
    _refused(client.post("/devices/dev-1/methods/logs%0A", json={}), 400, "Method name")
    _refused(client.get("/deployments/lab%0A"), 400, "Deployment name")
    _refused(client.get("/modules/digits%0A/1"), 400, "Invalid model name")
    _refused(client.get("/modules", params={"name": "digits\n"}), 400, "Invalid model name")
    _refused(client.post("/modules", json={"workspace": str(ws.root), "name": "digits\n"}), 400, "Invalid model name")
    tags = {"tags": {"site\n": "lab"}}
    _refused(client.put("/devices/dev-1/tags", json=tags), 400, "Tag name")
    digest = client.get("/modules/digits/1").json()["bundle"].removeprefix("/blobs/")
    _refused(client.get(f"/blobs/{digest}%0A"), 400, "Blob address")
    assert client.get(f"/blobs/{digest}").status_code == 200
    assert [d["id"] for d in client.get("/devices").json()] == ["dev-1"]


def test_a_bug_answers_500_in_the_one_shape_without_its_internals(
    hub: tuple[httpx.Client, Workspace], hub_service: list[HubServices], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ws = hub

    def broken() -> list[object]:
        raise ZeroDivisionError("internal detail /srv/secret")

    monkeypatch.setattr(hub_service[0].fleet, "list_devices", broken)  # a fault injected into the hub, not a mock
    body = _refused(client.get("/devices"), 500, "in its log")
    assert body["type"] == "InternalError" and "secret" not in str(body)
    with httpx.Client(base_url=client.base_url, headers=client.headers) as fresh:  # uvicorn closed that connection
        assert fresh.get("/devices/dev-1").status_code == 200  # the next request is served


def test_a_failing_database_answers_503_without_its_sql(
    hub: tuple[httpx.Client, Workspace], hub_service: list[HubServices], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ws = hub
    with hub_service[0].store.engine.begin() as conn:  # the database breaks underneath the hub
        conn.execute(sqlalchemy.text("ALTER TABLE devices RENAME TO devices_gone"))
    body = _refused(client.get("/devices"), 503, "retry later")
    assert body["type"] == "HubStoreError"
    assert "devices" not in str(body["detail"]) and "SELECT" not in str(body["detail"])  # no SQL, no table names
    assert "devices" in caplog.text  # the operator finds the reason in the hub's log
