"""Starting and stopping: init() failures, bad scripts, bad options, several workers."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import SCRIPTS, Server, run_cli
from parts import free_port, need_binary


@pytest.mark.parametrize("workers", ["1", "2"])
def test_failing_init_stops_the_server_with_the_scripts_error(tmp_path: Path, workers: str) -> None:
    started = time.monotonic()
    result = run_cli(
        ["-e", str(SCRIPTS / "init_fails.py"), "--port", str(free_port()), "--workers", workers],
        tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert "init() in init_fails.py failed at init_fails.py:5" in result.stderr
    assert "FileNotFoundError: model weights not found at /nowhere/model.pkl" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_script_without_run_is_refused(tmp_path: Path) -> None:
    result = run_cli(["-e", str(SCRIPTS / "no_run.py"), "--port", str(free_port())], tmp_path)
    assert result.returncode == 1
    assert "no_run.py defines no run() function" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "missing.py"], "missing.py does not exist"),
        ([], "Nothing to serve"),
        (["-e", str(SCRIPTS / "plain.py"), "--ssl-cert", "cert.pem"], "--ssl-cert and --ssl-key go together"),
        (["-e", str(SCRIPTS / "plain.py"), "--ssl-cert", "c.pem", "--ssl-key", "k.pem"], "Cannot use c.pem"),
        (
            ["-e", str(SCRIPTS / "plain.py"), "--auth-key", "a", "--auth-key", "b", "--auth-key", "c"],
            "at most two",
        ),
    ],
)
def test_user_mistakes_are_one_sentence_and_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli([*args, "--port", str(free_port())], tmp_path)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(serve, tmp_path: Path) -> None:
    server = serve("-e", str(SCRIPTS / "plain.py"))
    port = server.url.rsplit(":", 1)[1]
    result = run_cli(["-e", str(SCRIPTS / "plain.py"), "--port", port], tmp_path)
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr


def test_two_workers_each_run_init_and_stop_together_on_sigterm(serve) -> None:
    server: Server = serve("-e", str(SCRIPTS / "plain.py"), "--workers", "2")
    for _ in range(20):
        with httpx.Client(base_url=server.url) as fresh:  # new connections spread over the workers
            assert fresh.post("/score", content=b"{}").status_code == 200
    children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    server.proc.terminate()
    assert server.proc.wait(timeout=20) == 0
    for pid in children:
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0


def test_python_dash_m_edgeship_serve_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "edgeship", "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--entry-script" in result.stdout


def test_https_with_a_certificate_and_key(tmp_path: Path) -> None:
    openssl = need_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeship",
            "serve",
            "-e",
            str(SCRIPTS / "plain.py"),
            "--port",
            str(port),
            "--ssl-cert",
            str(cert),
            "--ssl-key",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(f"https://127.0.0.1:{port}/score", content=b"{}", verify=context, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["type"] == "str"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
