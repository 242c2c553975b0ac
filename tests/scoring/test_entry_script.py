"""An undecorated run(): the body as text, Azure ML's response encoding, failures that keep the server up."""

from __future__ import annotations

import pytest
from conftest import SCRIPTS, Server


@pytest.fixture(scope="module")
def server(serve) -> Server:
    return serve("--entry-script", str(SCRIPTS / "plain.py"))


def test_liveness_answers_healthy(server: Server) -> None:
    r = server.client.get("/")
    assert (r.status_code, r.text) == (200, "Healthy")


def test_run_gets_the_raw_body_as_str(server: Server) -> None:
    r = server.client.post("/score", content=b'{"data": [[1, 2]]}', headers={"X-Test": "yes"})
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "str"
    assert body["data"] == '{"data": [[1, 2]]}'
    assert body["parsed"] == {"data": [[1, 2]]}
    assert body["header"] == "yes"  # run(data, request_headers) receives the headers
    assert float(r.headers["x-ms-run-fn-exec-ms"]) >= 0


def test_non_json_body_is_passed_untouched(server: Server) -> None:
    r = server.client.post("/score", content="héllo wörld".encode())
    assert r.json()["data"] == "héllo wörld"


def test_get_passes_query_parameters_as_a_json_string(server: Server) -> None:
    r = server.client.get("/score", params=[("a", "1"), ("b", "x"), ("b", "[2]")])
    assert r.status_code == 200
    assert r.json()["parsed"] == {"a": 1, "b": ["x", [2]]}


def test_numpy_values_are_encoded_as_json(server: Server) -> None:
    r = server.client.post("/score", content=b"numpy")
    assert r.json() == {"array": [0, 1, 2], "scalar": 1.5}


def test_a_returned_str_is_a_json_string_and_none_is_an_empty_object(server: Server) -> None:
    r = server.client.post("/score", content=b"text")
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'"plain text"'
    assert server.client.post("/score", content=b"none").content == b"{}"


def test_exception_in_run_is_a_generic_500_and_the_server_keeps_serving(server: Server) -> None:
    r = server.client.post("/score", content=b"boom")
    assert r.status_code == 500
    assert r.headers["x-ms-run-function-failed"] == "True"
    assert r.json() == {
        "message": "An unexpected error occurred in the scoring script or model. "
        f"See the server log for request id {r.headers['x-request-id']}."
    }
    again = server.client.post("/score", content=b"{}")
    assert again.status_code == 200
    assert again.json()["type"] == "str"


def test_body_that_is_not_utf8_is_a_400(server: Server) -> None:
    r = server.client.post("/score", content=b"\xff\xfe\xfa")
    assert r.status_code == 400
    assert "UTF-8" in r.json()["message"]


def test_wrong_method_and_unknown_path(server: Server) -> None:
    assert server.client.put("/score", content=b"x").status_code == 405
    r = server.client.get("/nope")
    assert r.status_code == 404
    assert "/nope" in r.json()["message"]


def test_request_ids_are_echoed(server: Server) -> None:
    r = server.client.get("/", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_swagger_is_404_with_a_reason_without_decorators(server: Server) -> None:
    r = server.client.get("/swagger.json")
    assert r.status_code == 404
    assert "input_schema" in r.json()["message"]
