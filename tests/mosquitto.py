"""A real Mosquitto broker for tests: started on a free port in a temp dir, stoppable and restartable.

Tests that need a broker take the ``mosquitto`` fixture (``tests/conftest.py``);
Mosquitto missing skips locally and fails in CI (``tests/parts.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from parts import free_port, need_binary

__all__ = ["Mosquitto"]


class Mosquitto:
    """One broker process; ``restart()`` keeps its port (and, with persistence, its retained messages)."""

    def __init__(self, workdir: Path, *, persistence: bool = True, extra_config: str = "") -> None:
        self.binary = need_binary("mosquitto")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.workdir / "mosquitto.log"
        self.config = self.workdir / "mosquitto.conf"
        lines = [
            # As root, Mosquitto drops to its own user, which cannot write this test folder, and then
            # persists nothing without saying so (checked on 2.0.11): stay root for the test's broker.
            *(["user root"] if os.geteuid() == 0 else []),
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
        ]
        self.config.write_text("\n".join(lines) + "\n" + extra_config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file on the way out
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
