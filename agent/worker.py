"""``python -m edgeship.agent.worker``: one byte transfer or one unpacking, in a short-lived interpreter.

The agent runs these here, not in its own process, so that it never imports
``urllib.request``, ``http.client`` (with ``email``) or ``tarfile``: an agent that
installed a module idles as small as one that rebooted (ADR 0046). The parent
(:mod:`edgeship.agent.offload`) writes one JSON job on stdin; the worker answers JSON
lines on stdout: ``{"wrote": bytes_in_partial, "got": bytes_of_this_chunk}`` after each
chunk of a transfer, then one ``{"result": {...}}`` or ``{"error": class, "message": text}``.

It dies with the agent: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` first, then a check that
its parent is still the agent that started it (it may have died before the ``prctl``),
and the same check before every chunk it writes (where there is no ``prctl``).
A transfer holds an exclusive ``flock`` on its ``.part`` while it writes, so a second
writer of the same partial waits for the first to be gone.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
MAX_JOB = 64 * 1024  # bytes of the job line


def _die_with(parent: int) -> None:
    """SIGKILL this worker when the agent dies; exit now if it is gone already (before the prctl)."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux (glibc, musl); elsewhere the
    if prctl is not None and prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:  # per-chunk check below
        os._exit(3)
    _orphaned(parent)


def _orphaned(parent: int) -> None:
    if os.getppid() != parent:
        os._exit(3)  # the agent is gone: write nothing more


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _lock(fd: int, part: Path, wait: float) -> None:
    """Take the partial's write lock, waiting at most ``wait`` seconds for another writer to be gone."""
    from edgeship.agent.fetch.bounded import HostUnreachableError

    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            if time.monotonic() > deadline:
                raise HostUnreachableError(  # waiting is the cure, as for a host that is down (ADR 0042)
                    f"Another process still writes {part.name} after {wait:g} s; the next try resumes it."
                ) from exc
            time.sleep(0.05)


def fetch(job: dict[str, Any]) -> dict[str, Any]:
    """Bring the partial ``job["part"]`` towards ``job["size"]`` bytes from ``job["url"]``; its sha256 on success."""
    from edgeship.agent.fetch.bounded import Cancel, FetchLimits, open_range

    limits = FetchLimits(**job["limits"])
    size = int(job["size"])
    part = Path(job["part"])
    with part.open("ab") as out:
        _lock(out.fileno(), part, limits.window)
        have = out.tell()
        sha = hashlib.sha256()
        with part.open("rb") as existing:
            for chunk in iter(lambda: existing.read(1 << 20), b""):
                sha.update(chunk)
        with open_range(job["url"], have, limits=limits, cancel=Cancel()) as body:
            if body.status == 416:
                return {"status": 416, "start": have, "got": 0, "sha256": None}
            if body.start == 0 and have:  # a 200 to a Range request: the host starts over, so do we
                out.truncate(0)
                out.seek(0)
                sha = hashlib.sha256()

            def write(chunk: bytes) -> None:
                _orphaned(int(job["parent"]))
                out.write(chunk)
                sha.update(chunk)
                out.flush()  # what the parent is told is in the file
                _say({"wrote": out.tell(), "got": len(chunk)})

            try:
                got = body.copy(write, size - body.start)
            finally:
                out.flush()
                os.fsync(out.fileno())
        return {"status": body.status, "start": body.start, "got": got, "sha256": sha.hexdigest()}


def unpack(job: dict[str, Any]) -> dict[str, Any]:
    from edgeship.agent.runtimes.process import unpack_here

    unpack_here(Path(job["bundle"]), Path(job["dest"]), wheelhouse=bool(job["wheelhouse"]))
    return {}


JOBS = {"fetch": fetch, "unpack": unpack}


def main() -> int:
    job = json.loads(sys.stdin.readline(MAX_JOB))
    _die_with(int(job["parent"]))
    try:
        if job.get("kind") not in JOBS:
            raise ValueError(f"the worker knows no job {job.get('kind')!r}; agent and worker are of different versions")
        result = JOBS[job["kind"]](job)
    except Exception as exc:  # handed to the parent, which raises it again (offload.ERRORS)
        _say({"error": type(exc).__name__, "message": str(exc)})
        return 0
    _say({"result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
