"""Real scoring servers for the tests: ``python -m edgeship serve ...`` on a free port, driven by httpx.

Servers are started once per module (``serve`` fixture) and stopped at its end.
A server that exits before answering ``GET /`` fails the test with its stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from parts import free_port

from edgeship.registry import Model
from edgeship.workspace import Workspace

SCRIPTS = Path(__file__).parent / "scripts"
DATA = Path(__file__).parent.parent / "data"
START_TIMEOUT = 60.0  # seconds: imports (pandas, onnxruntime) plus init()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_cli(
    args: list[str], tmp: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``edgeship serve`` to completion (for commands that must fail fast)."""
    return subprocess.run(
        [sys.executable, "-m", "edgeship", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
        env={**os.environ, **(env or {})},
    )


def start_server(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    data_dir = tmp / f"service-{port}"
    log = tmp / f"server-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeship",
                "serve",
                *args,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdout=err,
            stderr=err,
            cwd=tmp,
            env={**os.environ, **(env or {})},
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log, data_dir)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {server.stderr()}")
        try:
            if httpx.get(server.url + "/", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"server did not answer within {START_TIMEOUT}s: {server.stderr()}")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start servers for this module; all are stopped when the module's tests are done."""
    started: list[Server] = []
    tmp = tmp_path_factory.mktemp("servers")

    def _start(*args: str, env: dict[str, str] | None = None) -> Server:
        server = start_server(list(args), tmp, env)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def model_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with: tiny text models 'alpha' (versions 1 and 2) and 'beta', and the reference models."""
    root = tmp_path_factory.mktemp("ws")
    ws = Workspace.at(root / "ws")
    ws.create()
    files = root / "files"
    files.mkdir()
    for name, text in (("alpha", "alpha v1"), ("alpha", "alpha v2"), ("beta", "beta v1")):
        path = files / f"{name}.txt"
        path.write_text(text)
        Model.register(ws, path, name)
    Model.register(ws, DATA / "mnist-cntk-opset7.onnx", "mnist")
    Model.register(ws, DATA / "hello_world_float.tflite", "sine")
    Model.register(ws, DATA / "hello_world_int8.tflite", "sine-int8")
    return ws
