"""A failing run() leaks nothing to the caller by default; the log has it, and --error-details opts in.

The entry script raises with a secret-looking string and a path in its message.
Every 5xx body must be generic (no secret, no path, no ``file:line``) and name a
request id that the server log carries next to the full traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SCRIPTS, Server, run_cli

LEAKS = ("edgeship-test-secret-4f9c", "/home/alice", "leaky.py", "RuntimeError", "Traceback")
V2_INPUT = {"inputs": [{"name": "fail", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


@pytest.fixture(scope="module")
def script_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """leaky.py beside a swagger3.json that is not JSON: reading it is an unexpected internal error."""
    folder = tmp_path_factory.mktemp("leaky")
    shutil.copy(SCRIPTS / "leaky.py", folder / "leaky.py")
    (folder / "swagger3.json").write_text("{not json, /srv/private/api-token=abc")
    return folder


@pytest.fixture(scope="module")
def server(serve, script_dir: Path) -> Server:
    return serve("--entry-script", str(script_dir / "leaky.py"))


@pytest.fixture(scope="module")
def debug_server(serve, script_dir: Path) -> Server:
    return serve("--entry-script", str(script_dir / "leaky.py"), "--error-details")


def _assert_generic(text: str) -> None:
    for leak in (*LEAKS, "JSONDecodeError", "api-token"):
        assert leak not in text


def test_run_failure_body_is_generic_and_names_the_request_id(server: Server) -> None:
    r = server.client.post("/score", content=b"fail")
    assert r.status_code == 500
    request_id = r.headers["x-request-id"]
    assert r.json() == {
        "message": f"An unexpected error occurred in the scoring script or model. "
        f"See the server log for request id {request_id}."
    }
    assert r.headers["x-ms-run-function-failed"] == "True"
    _assert_generic(r.text + str(r.headers))


def test_the_log_has_the_detail_under_the_request_id(server: Server) -> None:
    r = server.client.post("/score", content=b"fail", headers={"x-request-id": "trace-me-0001"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "trace-me-0001"
    assert "trace-me-0001" in r.json()["message"]
    log = server.stderr()
    line = next(line for line in log.splitlines() if "request trace-me-0001 failed" in line)
    assert "edgeship-test-secret-4f9c" in line and "leaky.py:" in line
    after = log[log.index("request trace-me-0001 failed") :]
    assert "Traceback" in after and "/home/alice/private/models/weights.bin" in after


def test_v2_run_failure_body_is_generic(server: Server) -> None:
    r = server.client.post("/v2/models/leaky/infer", json=V2_INPUT)
    assert r.status_code == 500
    assert r.json() == {
        "error": f"An unexpected error occurred in the scoring script or model. "
        f"See the server log for request id {r.headers['x-request-id']}."
    }
    _assert_generic(r.text)


def test_sys_exit_in_run_is_a_generic_500_and_the_server_keeps_serving(server: Server) -> None:
    r = server.client.post("/score", content=b"exit")
    assert r.status_code == 500
    assert r.headers["x-ms-run-function-failed"] == "True"
    _assert_generic(r.text)
    assert server.client.post("/score", content=b"fine").json() == {"ok": True}


def test_unencodable_result_is_a_generic_500(server: Server) -> None:
    r = server.client.post("/score", content=b"unencodable")
    assert r.status_code == 500
    assert "object" not in r.json()["message"]
    assert "JSON" not in r.json()["message"]


def test_unexpected_internal_error_body_is_generic(server: Server) -> None:
    r = server.client.get("/swagger.json", params={"version": "3"})
    assert r.status_code == 500
    assert r.json() == {
        "message": "An unexpected internal error occurred. "
        f"See the server log for request id {r.headers['x-request-id']}."
    }
    _assert_generic(r.text)
    assert "x-ms-run-function-failed" not in r.headers
    assert f"request {r.headers['x-request-id']} failed: JSONDecodeError" in server.stderr()


def test_client_errors_still_name_the_problem(server: Server) -> None:
    r = server.client.post("/score", content=b"\xff\xfe")
    assert r.status_code == 400
    assert "UTF-8" in r.json()["message"]


def test_error_details_flag_puts_the_exception_in_the_body(debug_server: Server) -> None:
    r = debug_server.client.post("/score", content=b"fail")
    assert r.status_code == 500
    message = r.json()["message"]
    assert "edgeship-test-secret-4f9c" in message and "leaky.py:" in message and "RuntimeError" in message
    r = debug_server.client.post("/v2/models/leaky/infer", json=V2_INPUT)
    assert "edgeship-test-secret-4f9c" in r.json()["error"]
    r = debug_server.client.get("/swagger.json", params={"version": "3"})
    assert "JSONDecodeError" in r.json()["message"]
    assert "Error details are on" in debug_server.stderr()


def test_error_details_environment_variable_opts_in_too(serve, script_dir: Path) -> None:
    server = serve("--entry-script", str(script_dir / "leaky.py"), env={"EDGESHIP_SCORING_ERROR_DETAILS": "1"})
    r = server.client.post("/score", content=b"fail")
    assert "edgeship-test-secret-4f9c" in r.json()["message"]


def test_an_unreadable_error_details_value_stops_the_server(tmp_path: Path) -> None:
    result = run_cli(
        ["--entry-script", str(SCRIPTS / "leaky.py"), "--port", "0"],
        tmp_path,
        env={"EDGESHIP_SCORING_ERROR_DETAILS": "maybe"},
    )
    assert result.returncode == 1
    assert "EDGESHIP_SCORING_ERROR_DETAILS is 'maybe'; set it to 1 (on) or 0 (off)." in result.stderr


def test_every_response_carries_request_ids_as_azure(server: Server) -> None:
    r = server.client.get("/")
    generated = r.headers["x-request-id"]
    assert len(generated) == 36  # a UUID when the caller sends none
    assert r.headers["x-ms-request-id"] == generated
    assert "x-ms-client-request-id" not in r.headers
    r = server.client.get("/", headers={"x-ms-client-request-id": "client-7"})
    assert (r.headers["x-ms-client-request-id"], r.headers["x-ms-request-id"]) == ("client-7", "client-7")
    r = server.client.get("/", headers={"x-ms-request-id": "legacy-1", "x-request-id": "mine"})
    assert (r.headers["x-request-id"], r.headers["x-ms-request-id"]) == ("mine", "legacy-1")


def test_a_request_id_too_long_or_not_printable_is_refused(server: Server) -> None:
    r = server.client.get("/", headers={"x-request-id": "a" * 101})
    assert r.status_code == 431
    assert "100 characters" in r.json()["message"]
    r = server.client.get("/", headers={"x-ms-client-request-id": "two words"})
    assert r.status_code == 400
    assert "printable ASCII" in r.json()["message"]
    assert server.client.get("/", headers={"x-request-id": "a" * 100}).status_code == 200
