"""One worker process: load the entry script, call ``init()`` once, then ``run(mini_batch)`` per message.

Started with the ``spawn`` method by :mod:`edgeship.batch.pool`; it talks to the
parent over one pipe and exits when the pipe closes (the parent ended, even by
SIGKILL). The script sees what a scoring module sees (``AZUREML_MODEL_DIR``,
``Model.get_model_path``), plus ``azureml_user.parallel_run.EntryScript`` as
ParallelRunStep gives it. Whatever it prints goes to its own log file, not to the
terminal where the progress bar is.

Messages, parent to worker: ``(index, payload)``; worker to parent: ``("ready",)``,
``("init-failed", message)``, ``("ok", index, rows_out, text)`` or
``("error", index, message)``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = ["WorkerSpec", "format_rows", "worker_main"]

BATCH_SHIM_DIR = Path(__file__).resolve().parent / "_shims"


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker needs to start; plain data, so it crosses the spawn boundary."""

    entry_script: str
    source_dir: str | None
    model_dir: str  # AZUREML_MODEL_DIR
    output_dir: str
    logs_dir: str
    arguments: tuple[str, ...] = ()  # sys.argv[1:] of the script, as ParallelRunStep's arguments=
    parent_pid: int = 0


def format_rows(result: Any) -> tuple[int, str]:
    """``run()``'s return as ParallelRunStep's append_row writes it: one line per row or element.

    A DataFrame's rows are its values joined by spaces (no header, no index); any
    other sequence gives ``str(element)`` per line.
    """
    if result is None:
        raise TypeError("run() returned None; return a list or a DataFrame with one element per scored item")
    if type(result).__name__ == "DataFrame" and hasattr(result, "to_csv"):
        text = result.to_csv(sep=" ", header=False, index=False)
        return len(result), str(text)
    if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
        raise TypeError(f"run() returned a {type(result).__name__}; return a list or a DataFrame")
    lines = [str(element).replace("\n", " ") for element in result]
    return len(lines), "".join(line + "\n" for line in lines)


def _redirect_output(log_file: Path) -> None:
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies, even a ``run()`` that never returns.

    Strictly, when the parent *thread* that started it ends: ``run_batch`` starts and
    stops its pool within one call, so it must not be left running in a thread that ends
    before it returns.
    """
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _receive(conn: Connection, inbox: queue.Queue[tuple[int, Any] | None]) -> None:
    """Read mini-batches as they come, so the parent's send never waits for run() to finish."""
    while True:
        try:
            inbox.put(conn.recv())
        except (EOFError, OSError):
            inbox.put(None)
            return


def worker_main(spec: WorkerSpec, number: int, conn: Connection) -> None:
    """The spawn target. Never raises: every failure becomes a message or the process's end."""
    _die_with_parent()
    if os.getppid() != spec.parent_pid:
        return  # the parent died before the line above took effect
    _redirect_output(Path(spec.logs_dir) / f"worker-{number}.log")
    os.environ["AZUREML_MODEL_DIR"] = spec.model_dir
    os.environ["EDGESHIP_BATCH_OUTPUT_DIR"] = spec.output_dir
    os.environ["EDGESHIP_BATCH_LOG_DIR"] = spec.logs_dir
    sys.argv = [spec.entry_script, *spec.arguments]
    if str(BATCH_SHIM_DIR) not in sys.path:
        sys.path.append(str(BATCH_SHIM_DIR))
    from edgeship.errors import EdgeshipError
    from edgeship.scoring.entry import EntryScript

    try:
        script = EntryScript.load(spec.entry_script, spec.source_dir)
        script.init()
        conn.send(("ready",))
    except EdgeshipError as exc:
        with contextlib.suppress(OSError):
            conn.send(("init-failed", str(exc)))
        return
    except OSError:
        return  # the parent closed the pool while this worker was starting
    inbox: queue.Queue[tuple[int, Any] | None] = queue.Queue()
    threading.Thread(target=_receive, args=(conn, inbox), name="batch-inbox", daemon=True).start()
    while True:
        message = inbox.get()
        if message is None:
            return  # the parent is gone
        index, payload = message
        try:
            rows_out, text = format_rows(script.run(payload))
            reply: tuple[Any, ...] = ("ok", index, rows_out, text)
        except (Exception, SystemExit) as exc:
            reply = ("error", index, f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
