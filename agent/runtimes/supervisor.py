"""The process runtime's supervisor: ``python -m edgeship.agent.runtimes.supervisor SERVICE_DIR``.

One supervisor per service, detached from whoever started it (it forks once and
starts a new session, so an agent or CLI that exits or is killed leaves it
running, and it is never left a zombie of its caller). It runs the scoring server
from ``service.json`` as its child and applies the restart policy, like Docker's
daemon does for a container:

- ``always`` restarts after any exit, ``on-failure`` after a non-zero exit,
  ``never`` not at all; restarts wait 1, 2, 4 ... up to 60 s (state ``backoff``),
  and the delay resets once a child has run for 60 s.
- SIGTERM (from ``ProcessRuntime.stop``) is forwarded to the child's process group;
  the supervisor then records ``stopped`` and exits. It never restarts after that.
- Its only output is ``run.json`` (written atomically after every change; the
  runtime reads it) and lines prefixed ``[supervisor]`` in ``server.log``. When it
  cannot write them after starting the child (its folder was removed under it), it
  kills the child and exits: a server nobody can find must not keep a port.

Resource limits (``setrlimit``) are applied to the child only, in ``preexec_fn``:
the supervisor is single-threaded, so that is safe here.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeship.agent.runtimes.procinfo import LOG_FILE, RUN_FILE, SERVICE_FILE, exit_code_of, process_start_time
from edgeship.fsutil import atomic_write_text

__all__ = ["main"]

MAX_LOG_BYTES = 10 * 1024 * 1024  # bytes; a larger log is moved to server.log.1 when the child (re)starts
BACKOFF_FIRST = 1.0  # seconds before the first restart
BACKOFF_MAX = 60.0  # seconds; the delay doubles up to this
STABLE_AFTER = 60.0  # seconds a child must run before the delay resets


class _Supervisor:
    def __init__(self, service_dir: Path) -> None:
        self.dir = service_dir
        self.spec: dict[str, Any] = json.loads((service_dir / SERVICE_FILE).read_text())
        self.pid = os.getpid()
        self.started = process_start_time(self.pid)
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restart_count = 0
        self.exit_code: int | None = None
        self.last_error: str | None = None

    def record(self, state: str, child_pid: int | None = None) -> None:
        data = {
            "state": state,
            "supervisorPid": self.pid,
            "supervisorStart": self.started,
            "pid": child_pid,
            "pidStart": process_start_time(child_pid) if child_pid else None,
            "exitCode": self.exit_code,
            "restartCount": self.restart_count,
            "lastError": self.last_error,
            "updatedAt": time.time(),
        }
        atomic_write_text(self.dir / RUN_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def say(self, message: str) -> None:
        with (self.dir / LOG_FILE).open("a") as log:
            log.write(f"[supervisor] {time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")

    def _limits(self) -> None:
        """Runs in the child between fork and exec: apply rlimits (units in ProcessLimits)."""
        limits = self.spec.get("limits", {})
        for name, value in (("RLIMIT_AS", limits.get("addressSpaceBytes")), ("RLIMIT_NOFILE", limits.get("openFiles"))):
            if value:
                which = getattr(resource, name)
                _, hard = resource.getrlimit(which)
                value = value if hard == resource.RLIM_INFINITY else min(value, hard)
                resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))

    def spawn(self) -> subprocess.Popen[bytes]:
        log_path = self.dir / LOG_FILE
        if log_path.exists() and log_path.stat().st_size > MAX_LOG_BYTES:
            os.replace(log_path, log_path.with_name(LOG_FILE + ".1"))
        with log_path.open("ab") as log:
            return subprocess.Popen(
                self.spec["command"],
                cwd=self.spec["cwd"],
                env=self.spec["env"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._limits,  # safe: the supervisor is single-threaded
                close_fds=True,
            )

    def on_term(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        delay = BACKOFF_FIRST
        policy = self.spec.get("restart", "on-failure")
        while not self.stopping:
            began = time.monotonic()
            try:
                self.child = self.spawn()
            except OSError as exc:
                self.last_error = f"could not start the scoring server: {exc}"
                self.say(self.last_error)
                self.record("failed")
                return 1
            try:
                self.say(f"started the scoring server (pid {self.child.pid}, restart {self.restart_count})")
                self.record("running", self.child.pid)
            except OSError:
                # The service folder went away as the child started (a restarted agent removed this
                # half-started slot as an orphan before run.json existed): nobody could find or stop
                # the child, so it must not outlive this supervisor.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.child.pid, signal.SIGKILL)
                self.child.wait()
                return 1
            returncode = self.child.wait()
            self.exit_code = exit_code_of(returncode)
            if self.stopping:
                break
            self.last_error = f"the scoring server exited with code {self.exit_code}"
            again = policy == "always" or (policy == "on-failure" and self.exit_code != 0)
            if not again:
                self.say(f"{self.last_error}; restart policy {policy}: not restarting")
                self.record("stopped" if self.exit_code == 0 else "failed")
                return 0
            if time.monotonic() - began >= STABLE_AFTER:
                delay = BACKOFF_FIRST
            self.say(f"{self.last_error}; restarting in {delay:g} s")
            self.record("backoff")
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            delay = min(delay * 2, BACKOFF_MAX)
            self.restart_count += 1
        self.say(f"stopped (exit code {self.exit_code})")
        self.record("stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    """Fork once (the caller reaps the parent at once), start a session, supervise."""
    args = sys.argv[1:] if argv is None else argv
    service_dir = Path(args[0]).resolve()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    return _Supervisor(service_dir).run()


if __name__ == "__main__":
    sys.exit(main())
