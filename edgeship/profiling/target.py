"""The module under test, running: the scoring server a module runs, started for one measurement.

:class:`ProcessTarget` starts ``edgeship serve`` (the server a bundle's process
runtime runs, here in this environment) with the profiled models laid out as in a
module, waits until it is healthy and stops it after. A process cannot be given a
CPU or memory limit portably, so it runs unlimited; its peak use is measured.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.errors import EdgeshipError
from edgeship.profiling.monitor import ResourceMonitor

__all__ = ["ProcessTarget", "ProfilingError", "RunningTarget", "free_port"]

_STOP_WAIT_S = 10.0


class ProfilingError(EdgeshipError):
    """A profile could not be made (the module did not start, every request failed, bad input)."""


@dataclass(frozen=True)
class RunningTarget:
    url: str  # the scoring URI
    pid: int  # the server's process; its children are its workers (0 in a container)
    handle: Any = None  # the runtime's own handle (a docker Container)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcessTarget:
    """``edgeship serve`` for ``models`` with an optional entry script, one server process per measurement."""

    workspace_root: Path
    models: Sequence[str]  # NAME:VERSION
    entry_script: Path | None = None
    source_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    server_workers: int = 1
    port: int | None = None
    start_timeout_s: float = 120.0
    kind: str = "process"

    def monitor(self, running: RunningTarget) -> ResourceMonitor:
        return ResourceMonitor(running.pid)

    @contextmanager
    def running(self) -> Iterator[RunningTarget]:
        from edgeship.agent.runtimes.base import health_poll_delay, probe_health

        port = self.port or free_port()
        command = [sys.executable, "-m", "edgeship", "serve", "--port", str(port)]
        command += ["--workers", str(self.server_workers)]
        if self.entry_script is not None:
            command += ["--entry-script", str(self.entry_script)]
        if self.source_dir is not None:
            command += ["--source-dir", str(self.source_dir)]
        for ref in self.models:
            command += ["-m", ref]
        command += ["--workspace", str(self.workspace_root)]
        env = {**os.environ, **self.env}
        for key in ("EDGESHIP_PRIMARY_KEY", "EDGESHIP_SECONDARY_KEY"):
            env.pop(key, None)  # the load generator sends no key
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                began = time.monotonic()
                while not probe_health(port):
                    if process.poll() is not None:
                        log.seek(0)
                        tail = log.read().decode("utf-8", "replace").strip().splitlines()[-5:]
                        raise ProfilingError(
                            f"The scoring server exited with code {process.returncode} before it was healthy: "
                            f"{' / '.join(tail) or 'no output'}"
                        )
                    if time.monotonic() - began > self.start_timeout_s:
                        raise ProfilingError(
                            f"The scoring server was not healthy within {self.start_timeout_s:g} s; "
                            "check init() with 'edgeship serve'."
                        )
                    time.sleep(health_poll_delay(time.monotonic() - began))
                yield RunningTarget(f"http://127.0.0.1:{port}/score", process.pid)
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(_STOP_WAIT_S)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
