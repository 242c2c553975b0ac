"""``edgeship hub serve`` as a real process, for tests that kill the hub (SIGKILL) or stop it (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from parts import free_port

__all__ = ["WAIT", "HubProcess"]

WAIT = 120.0  # seconds for a hub process to start (or for a test's deliveries to arrive)


class HubProcess:
    """``edgeship hub serve`` on a workspace and a broker; ``start(**env)`` adds variables (a fault point).

    ``db_url`` serves from that database instead of the workspace's SQLite; ``extra`` are more options.
    """

    def __init__(self, workspace: Path, broker_url: str, log: Path, *, username: str | None = None,
                 password: str | None = None, mqtt5: bool = False, db_url: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.workspace, self.broker_url, self.log = workspace, broker_url, log
        self.name = username or "hub"
        self.login = (["--broker-username", username] if username else []) + (["--mqtt5"] if mqtt5 else [])
        self.options = (["--db", db_url] if db_url else []) + list(extra)
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, **env: str) -> HubProcess:
        """Start the process; with ``wait`` (the default) return once its API answers."""
        extra = {"EDGESHIP_BROKER_PASSWORD": self.password} if self.password else {}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeship", "hub", "serve", "-w", str(self.workspace), *self.options,
                 "--broker", self.broker_url, *self.login, "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **extra, **env},
            )  # fmt: skip
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = WAIT) -> None:
        """Return once the API answers ``/healthz``; fail with the log's tail if the process exits or never does."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer within {timeout} s: {self.log.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (its database connections and MQTT session just break)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
