"""@rawhttp and AMLResponse from the azureml stand-ins (the real azureml package is not installed)."""

from __future__ import annotations

import pytest
from conftest import SCRIPTS, Server


@pytest.fixture(scope="module")
def server(serve) -> Server:
    return serve("--entry-script", str(SCRIPTS / "rawhttp_script.py"))


def test_run_gets_the_request_and_its_response_is_used_as_is(server: Server) -> None:
    r = server.client.post("/score", content=b"abc", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.content == b"cba"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers.get_list("x-items") == ["a", "b"]


def test_get_sees_method_path_and_query(server: Server) -> None:
    r = server.client.get("/score", params={"q": "42"})
    assert (r.status_code, r.text) == (200, "GET /score q=42")


def test_plain_return_values_are_json_encoded_and_request_json_works(server: Server) -> None:
    r = server.client.post("/score", json={"x": [1, 2]})
    assert r.json() == {"echo": {"x": [1, 2]}, "content_type": "application/json"}


def test_a_5xx_aml_response_is_marked_as_a_run_failure(server: Server) -> None:
    r = server.client.post("/score", content=b"fail")
    assert r.status_code == 503
    assert r.json() == {"error": "asked to fail"}
    assert r.headers["x-ms-run-function-failed"] == "True"
