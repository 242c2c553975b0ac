"""Run a job in ``python -m edgeship.agent.worker`` and wait for its answer (ADR 0046).

Downloads and unpacking import ``urllib.request``, ``http.client``, ``email`` and
``tarfile`` (about 1 MiB of resident memory an agent kept for weeks after one install);
the worker is a fresh interpreter (no fork of the threaded agent) that does one job and
exits. What the caller sees is unchanged: progress calls as bytes land, the same
exception classes with the same one-sentence messages, cancellation that stops the
transfer at once (the worker is killed; what it wrote stays, as with a cancelled read).

The worker dies with the agent (``PR_SET_PDEATHSIG``, see :mod:`edgeship.agent.worker`);
the death signal follows the thread that started it, which for the agent is its loop
thread, alive as long as the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from edgeship.agent.fetch.bounded import (
    Cancel,
    CancelledError,
    DownloadError,
    HostUnreachableError,
    ResumeRefusedError,
    SizeExceededError,
    SizeMismatchError,
    TooSlowError,
)
from edgeship.errors import RuntimeFailure

__all__ = ["ERRORS", "WorkerError", "run_job"]

MAX_LINE = 64 * 1024  # bytes of one answer line
ERRORS: dict[str, type[Exception]] = {cls.__name__: cls for cls in (
    DownloadError, HostUnreachableError, SizeExceededError, SizeMismatchError, TooSlowError, ResumeRefusedError,
    CancelledError, RuntimeFailure, OSError, BlockingIOError, PermissionError, FileNotFoundError,
)}  # fmt: skip


class WorkerError(RuntimeFailure):
    """The worker exited without an answer (killed, out of memory, a broken install)."""


def _flags() -> list[str]:
    from edgeship.agent.__main__ import PYTHON_FLAGS

    return list(PYTHON_FLAGS) if sys.flags.optimize >= 2 else []  # as the agent itself runs


def run_job(
    job: dict[str, Any],
    *,
    on_line: Callable[[dict[str, Any]], None] | None = None,
    cancel: Cancel | None = None,
    fallback: type[Exception] = WorkerError,
) -> dict[str, Any]:
    """The worker's ``result`` for ``job``; its error raised again (an unknown class as ``fallback``)."""
    with _started(job, fallback) as child:
        final: dict[str, Any] | None = None
        hook = cancel.hook(child.kill) if cancel is not None else contextlib.nullcontext()
        with hook:
            assert child.stdout is not None
            while line := child.stdout.readline(MAX_LINE):
                message = json.loads(line)
                if "result" in message or "error" in message:
                    final = message
                elif on_line is not None:
                    on_line(message)
            code = child.wait()
    if cancel is not None:
        cancel.check()
    if final is None:
        raise fallback(f"The agent's {job['kind']} worker exited with code {code} before it answered; "
                       "the next try runs it again.")
    if "error" in final:
        raise ERRORS.get(str(final["error"]), fallback)(str(final["message"]))
    return dict(final["result"])


@contextlib.contextmanager
def _started(job: dict[str, Any], fallback: type[Exception]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        child = subprocess.Popen(
            [sys.executable, *_flags(), "-m", "edgeship.agent.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )  # fmt: skip
    except OSError as exc:  # out of memory or processes: not a fault of the disk or the host
        raise fallback(f"The agent's {job['kind']} worker could not be started ({exc}); the next try "
                       "starts it again.") from exc
    try:
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a worker gone at once answers nothing: run_job says so
            child.stdin.write((json.dumps({**job, "parent": os.getpid()}) + "\n").encode())
            child.stdin.close()
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
