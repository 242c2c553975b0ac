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
    """``edgeship hub serve`` on a workspace and a broker; ``start(**env)`` adds variables (a fault point)."""

    def __init__(self, workspace: Path, broker_url: str, log: Path, *, username: str | None = None,
                 password: str | None = None, mqtt5: bool = False) -> None:  # fmt: skip
        self.workspace, self.broker_url, self.log = workspace, broker_url, log
        self.login = (["--broker-username", username] if username else []) + (["--mqtt5"] if mqtt5 else [])
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
                [sys.executable, "-m", "edgeship", "hub", "serve", "-w", str(self.workspace),
                 "--broker", self.broker_url, *self.login, "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **extra, **env},
            )  # fmt: skip
        if not wait:
            return self
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"hub exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"hub did not answer within {WAIT} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
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
