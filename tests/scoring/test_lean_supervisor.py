"""The long-lived ``edgeship serve`` process is lean and cleans up its temporary data folder.

The CLI prepares the layout and the config, then execs ``python -m
edgeship.scoring.supervisor`` (same PID), which must not carry typer, rich,
pydantic or the registry, and which removes the temporary data folder however
it is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import SCRIPTS
from parts import free_port

from edgeship.workspace import Workspace

START_TIMEOUT = 60.0


def _start(
    args: list[str], tmp: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, Path]:
    """``edgeship serve`` without --data-dir, its temp folders under a private TMPDIR."""
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeship", "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
        env={**os.environ, **(env or {}), "TMPDIR": str(tmpdir)},
    )
    return proc, f"http://127.0.0.1:{port}", tmpdir


def _wait_healthy(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server did not answer within {START_TIMEOUT}s: {proc.communicate()[1]}")


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the server did not stop within 20 s: {err}")
    return proc.returncode, err


def test_the_supervisor_module_imports_no_cli_stack() -> None:
    code = (
        "import sys, json, edgeship.scoring.supervisor, edgeship.scoring.server;"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('typer', 'rich', 'click', 'pydantic', 'sqlite3', 'ssl', 'uvicorn')"
        " or m.startswith(('edgeship.registry', 'edgeship.cli', 'edgeship.workspace')))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_serving_process_is_the_lean_supervisor_and_sigterm_removes_the_temp_folder(
    tmp_path: Path, workers: str
) -> None:
    proc, url, tmpdir = _start(["-e", str(SCRIPTS / "plain.py"), "--workers", workers], tmp_path)
    _wait_healthy(proc, url)
    assert httpx.post(url + "/score", content=b"{}").status_code == 200
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"edgeship.scoring.supervisor" in cmdline  # exec'd: same PID, no CLI process above it
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "pydantic_core" not in maps and "_sqlite3" not in maps
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("edgeship-serve-")]  # in use while serving
    code, err = _stop(proc)
    assert code == 0, err
    assert list(tmpdir.iterdir()) == [], err  # the data folder and the metrics folder are gone


def test_sigint_removes_the_temp_folder_with_its_model_layout(model_workspace: Workspace, tmp_path: Path) -> None:
    proc, url, tmpdir = _start(
        ["-e", str(SCRIPTS / "models.py"), "-m", "alpha:1", "--workspace", str(model_workspace.root)],
        tmp_path,
        {"TEST_MODEL_NAMES": "alpha"},
    )
    _wait_healthy(proc, url)
    (folder,) = tmpdir.iterdir()
    assert (folder / "azureml-models" / "alpha" / "1").is_dir()
    code, err = _stop(proc, signal.SIGINT)
    assert code == 0, err
    assert list(tmpdir.iterdir()) == [], err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_during_a_long_init_stops_at_once_and_cleans_up(tmp_path: Path, workers: str) -> None:
    proc, _, tmpdir = _start(["-e", str(SCRIPTS / "slow_init.py"), "--workers", workers], tmp_path)
    deadline = time.monotonic() + START_TIMEOUT
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().count(b"edgeship.scoring.supervisor"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)  # inside init() (one worker) or waiting for the workers' init() (two)
    started = time.monotonic()
    code, err = _stop(proc)
    assert time.monotonic() - started < 15
    assert code == 0, err
    assert list(tmpdir.iterdir()) == [], err


def test_collected_data_keeps_the_temp_folder_and_says_where(tmp_path: Path) -> None:
    proc, url, tmpdir = _start(["-e", str(SCRIPTS / "collector.py")], tmp_path)
    _wait_healthy(proc, url)
    assert httpx.post(url + "/score", json={"data": [[1.0, 2.0]]}).status_code == 200
    code, err = _stop(proc)
    assert code == 0, err
    (folder,) = tmpdir.iterdir()
    assert f"Collected data kept in {folder}" in err
    assert not (folder / "azureml-models").exists()
    assert list((folder / "modeldata").rglob("data.jsonl"))
