"""Worker processes with a per-invocation timeout: a ``run()`` that overstays is killed, not waited for.

``concurrent.futures`` cannot stop one task that hangs, so each worker here is a
``spawn``ed process with its own pipe. The parent knows which mini-batches each
worker holds and since when the first of them runs; :meth:`WorkerPool.wait`
returns finished attempts, and a worker that died or overstayed is killed,
replaced (its successor calls ``init()`` again) and its running attempt reported
as failed; the mini-batch it held next comes back unattempted. Each worker holds
up to :data:`PREFETCH` mini-batches, so it starts the next one the moment it
finishes one instead of waiting for the parent to be scheduled, read the result
and send more (two wake-ups per mini-batch, tens of ms each on a loaded machine).
The pool decides nothing about retries or thresholds: that is the runner's job.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from edgeship.batch.worker import WorkerSpec, worker_main
from edgeship.errors import EdgeshipError

__all__ = ["Attempt", "BatchError", "WorkerPool"]

PREFETCH = 2  # mini-batches a worker holds: the one it runs and the next
INIT_TIMEOUT_S = 600.0  # init() may load a large model; beyond this a worker is declared stuck
_KILL_WAIT_S = 5.0


class BatchError(EdgeshipError):
    """A batch run cannot go on (init failed, too many errors, bad input)."""


@dataclass
class Attempt:
    """A finished attempt at mini-batch ``index``: rows and text, or an error."""

    index: int
    rows_out: int = 0
    text: str = ""
    error: str | None = None
    attempted: bool = True  # False: handed back unstarted (its worker was replaced); not a try


@dataclass
class _Worker:
    number: int
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    held: deque[int] = field(default_factory=deque)  # mini-batches sent to it, the running one first
    since: float = 0.0  # when the first of them started (about: when its predecessor's result came)


class WorkerPool:
    def __init__(self, spec: WorkerSpec, size: int, invocation_timeout_s: float) -> None:
        self._spec = spec
        self._size = size
        self._timeout = invocation_timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._started = 0

    # Lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        for _ in range(self._size):
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        self._started += 1
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main, args=(self._spec, self._started, child_end), name=f"edgeship-batch-{self._started}"
        )
        process.daemon = True
        process.start()
        child_end.close()
        return _Worker(self._started, process, parent_end)

    def close(self) -> None:
        """Stop every worker: an idle one at the close of its pipe, a starting or busy one at once (SIGKILL).

        A busy worker's result would be thrown away, and a starting one may be deep in
        init(): neither is worth waiting for.
        """
        for worker in self._workers:
            worker.conn.close()
            if not worker.ready or worker.held:
                worker.process.kill()
        deadline = time.monotonic() + _KILL_WAIT_S
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self._workers = []

    def _replace(self, worker: _Worker) -> None:
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        self._workers[self._workers.index(worker)] = self._spawn()

    # Work --------------------------------------------------------------------
    def idle(self) -> int:
        """Free places for mini-batches across ready workers."""
        return sum(PREFETCH - len(w.held) for w in self._workers if w.ready)

    def busy(self) -> int:
        return sum(len(w.held) for w in self._workers)

    def submit(self, index: int, payload: Any) -> None:
        worker = min((w for w in self._workers if w.ready and len(w.held) < PREFETCH), key=lambda w: len(w.held))
        if not worker.held:
            worker.since = time.monotonic()
        worker.held.append(index)
        with contextlib.suppress(OSError):  # it died: wait() sees its sentinel and fails the attempt
            worker.conn.send((index, payload))

    def wait(self, max_wait_s: float = 1.0) -> list[Attempt]:
        """Block until something happens (at most ``max_wait_s``); return finished attempts."""
        now = time.monotonic()
        deadlines = [w.since + self._timeout for w in self._workers if w.held]
        deadlines += [w.started + INIT_TIMEOUT_S for w in self._workers if not w.ready]
        timeout = max(0.0, min([now + max_wait_s, *deadlines]) - now)
        handles: list[Any] = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        ready = set(wait(handles, timeout))
        finished: list[Attempt] = []
        for worker in list(self._workers):
            finished.extend(self._check(worker, worker.conn in ready, worker.process.sentinel in ready))
        return finished

    def _check(self, worker: _Worker, readable: bool, exited: bool) -> list[Attempt]:
        finished: list[Attempt] = []
        lost = False
        while readable:
            try:
                finished += self._handle(worker, worker.conn.recv())
                readable = worker.conn.poll()
            except (EOFError, OSError):
                lost, readable = True, False
        if finished:
            return finished
        if exited or (lost and not worker.process.is_alive()):
            worker.process.join(_KILL_WAIT_S)
            code = worker.process.exitcode
            if not worker.ready:
                raise BatchError(
                    f"A worker exited with code {code} while loading the entry script or in init(); "
                    f"see its log in {self._spec.logs_dir}."
                )
            return self._fail(worker, f"the worker process exited with code {code} during run()")
        now = time.monotonic()
        if worker.held and now - worker.since > self._timeout:
            return self._fail(worker, f"run() did not return within --run-invocation-timeout {self._timeout:g} s")
        if not worker.ready and now - worker.started > INIT_TIMEOUT_S:
            raise BatchError(f"init() did not finish within {INIT_TIMEOUT_S:g} s; see {self._spec.logs_dir}.")
        return []

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> list[Attempt]:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            return []
        if kind == "init-failed":
            raise BatchError(f"{message[1]} (worker log: {self._spec.logs_dir}/worker-{worker.number}.log)")
        if not worker.held or message[1] != worker.held[0]:
            return []
        index = worker.held.popleft()
        worker.since = time.monotonic()  # the next one it holds starts now
        if kind == "ok":
            return [Attempt(index, rows_out=int(message[2]), text=str(message[3]))]
        return [Attempt(index, error=str(message[2]))]

    def _fail(self, worker: _Worker, reason: str) -> list[Attempt]:
        held = list(worker.held)
        self._replace(worker)
        if not held:
            return []
        return [Attempt(held[0], error=reason)] + [Attempt(i, attempted=False) for i in held[1:]]
