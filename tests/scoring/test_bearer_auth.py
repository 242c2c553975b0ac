"""Bearer keys (primary and secondary, as Azure ML has): scoring needs one, liveness and health stay open."""

from __future__ import annotations

import pytest
from conftest import SCRIPTS, Server

PRIMARY, SECONDARY = "primary-key-123", "secondary-key-456"


@pytest.fixture(scope="module")
def server(serve) -> Server:
    return serve("-e", str(SCRIPTS / "numpy_schema.py"), "--auth-key", PRIMARY, "--auth-key", SECONDARY)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/score"),
        ("GET", "/v2/models/numpy_schema"),
        ("POST", "/v2/models/numpy_schema/infer"),
        ("GET", "/v2/openapi.json"),
    ],
)
def test_scoring_endpoints_need_a_valid_key(server: Server, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": PRIMARY}):
        r = server.client.request(method, path, json={"data": [[1, 2, 3]]}, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert list(r.json()) == (["error"] if path.startswith("/v2") else ["message"])  # v2: the protocol's body


def test_the_v2_openapi_document_declares_the_bearer_scheme_when_keys_are_set(server: Server) -> None:
    doc = server.client.get("/v2/openapi.json", headers={"Authorization": f"Bearer {PRIMARY}"}).json()
    assert doc["paths"]["/v2/models/numpy_schema/infer"]["post"]["security"] == [{"Bearer": []}]
    assert "security" not in doc["paths"]["/v2/health/live"]["get"]


@pytest.mark.parametrize("key", [PRIMARY, SECONDARY])
def test_primary_and_secondary_keys_both_work(server: Server, key: str) -> None:
    r = server.client.post("/score", json={"data": [[1, 2, 3]]}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json()["sum"] == [6.0]


def test_liveness_health_swagger_and_metrics_stay_open(server: Server) -> None:
    assert server.client.get("/").text == "Healthy"
    assert server.client.get("/v2/health/live").json() == {"live": True}
    assert server.client.get("/v2/health/ready").json() == {"ready": True}
    assert server.client.get("/swagger.json").status_code == 200
    assert server.client.get("/metrics").status_code == 200
