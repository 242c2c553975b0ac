"""Many Ed25519 signatures at once, spread over the calling thread and worker processes.

Why: a re-evaluation that reaches 10,000 devices signs 10,000 documents, about 45 µs
of CPU each, and ``cryptography`` holds the GIL while it signs, so threads cannot
share the work. :meth:`SigningPool.sign` splits a batch of messages between the
calling thread and ``workers`` helper processes, and returns exactly the signatures
the hub's signers would make: Ed25519 is deterministic, so the bytes do not depend on
where they were made (ADR 0027).

A worker is ``python -m edgeship.hub.signing_worker``, started on the first large
batch, fed over its stdin and answering on its stdout (a length-prefixed frame each
way; no ``multiprocessing``, so no fork of a threaded hub and no re-import of the
caller's ``__main__``). It ends when its stdin closes: with the pool, or with the hub.

Only :class:`~edgeship.signing.Signer` keys (in memory) are sent to workers, as
PKCS#8 PEM over the pipe, and kept in the worker's memory; any other ``SignerLike``
(an HSM, a remote signer) and any small batch is signed in the calling thread. A
worker that fails costs only time: its share is signed in the calling thread and a
new worker is started at the next batch.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

from edgeship.hub.signing_worker import SIGNATURE_BYTES, read_exact, write_frame
from edgeship.signing import Signer, SignerLike

__all__ = ["MIN_SHARED", "Signing", "SigningPool", "SigningSession", "default_workers", "shared_pool"]

log = logging.getLogger("edgeship.hub")

MIN_SHARED = 256  # messages below which the calling thread signs alone (a round trip costs about 1 ms)


def default_workers() -> int:
    """Helper processes beside the calling thread: one per further core this process may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, cores - 1)


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeship.hub.signing_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            close_fds=True,
        )

    def send(self, pems: Sequence[bytes], messages: Sequence[bytes]) -> None:
        assert self.process.stdin is not None
        write_frame(self.process.stdin, [*pems], [*messages])
        self.process.stdin.flush()

    def receive(self, count: int, keys: int) -> list[list[bytes]]:
        assert self.process.stdout is not None
        data = read_exact(self.process.stdout, count * keys * SIGNATURE_BYTES)
        step = keys * SIGNATURE_BYTES
        return [
            [data[i + k * SIGNATURE_BYTES:i + (k + 1) * SIGNATURE_BYTES] for k in range(keys)]
            for i in range(0, len(data), step)
        ]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class SigningPool:
    """Signs batches of messages with a list of signers; thread-safe (one batch uses the workers at a time)."""

    def __init__(self, workers: int | None = None, *, min_shared: int = MIN_SHARED) -> None:
        self.workers = default_workers() if workers is None else max(0, workers)
        self.min_shared = min_shared
        self._running: list[_Worker] = []
        self._busy = threading.Lock()  # held by the batch that is using the workers
        self._pems: dict[str, bytes] = {}  # keyid -> PEM, serialised once

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids (benchmarks count their CPU)."""
        return [w.process.pid for w in self._running]

    def sign(self, signers: Sequence[SignerLike], messages: Sequence[bytes]) -> list[list[bytes]]:
        """``result[i][j]``: message ``i`` signed by ``signers[j]``."""
        if len(messages) < self.min_shared or not self.workers or not all(isinstance(s, Signer) for s in signers):
            return _sign_here(signers, messages)
        if not self._busy.acquire(blocking=False):  # another batch has the workers: sign this one here
            return _sign_here(signers, messages)
        try:
            return self._shared(signers, messages)  # type: ignore[arg-type]  # all Signer (checked above)
        finally:
            self._busy.release()

    @contextlib.contextmanager
    def session(self) -> Iterator[SigningSession]:
        """Hold the workers for a sequence of :meth:`SigningSession.start` calls (a pipelined re-evaluation).

        Another thread that signs meanwhile signs in its own thread. Results must be taken in start order.
        """
        held = self._busy.acquire(blocking=False)
        session = SigningSession(self, held)
        try:
            yield session
        finally:
            try:
                for signing in session.started:  # a worker's answers not taken would be read by the next batch
                    signing.result()
            finally:
                if held:
                    self._busy.release()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (at exit too: a batch still signing gets ``timeout`` seconds, then its worker goes)."""
        held = self._busy.acquire(timeout=timeout)
        try:
            workers, self._running = self._running, []
        finally:
            if held:
                self._busy.release()
        for worker in workers:
            worker.close()

    def _shared(self, signers: Sequence[Signer], messages: Sequence[bytes]) -> list[list[bytes]]:
        pems = [self._pem(s) for s in signers]
        size = -(-len(messages) // (self.workers + 1))
        chunks = [messages[i:i + size] for i in range(0, len(messages), size)]
        sent: list[tuple[_Worker, int]] = []
        try:
            while len(self._running) < min(self.workers, len(chunks) - 1):
                self._running.append(_Worker())
            for worker, chunk in zip(self._running, chunks[1:], strict=False):
                worker.send(pems, chunk)
                sent.append((worker, len(chunk)))
        except OSError as exc:
            self._fail(exc)
            return _sign_here(signers, messages)
        out = _sign_here(signers, chunks[0])
        for worker, count in sent:
            try:
                out += worker.receive(count, len(pems))
            except (OSError, EOFError) as exc:
                self._fail(exc)
                return out + _sign_here(signers, messages[len(out):])
        return out

    def _pem(self, signer: Signer) -> bytes:
        pem = self._pems.get(signer.keyid)
        if pem is None:
            pem = self._pems[signer.keyid] = signer.private_pem()
        return pem

    def _fail(self, exc: BaseException) -> None:
        log.warning("a signing worker failed (%s); its share was signed in the hub's own thread", exc)
        workers, self._running = self._running, []
        for worker in workers:
            worker.process.kill()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                worker.process.wait(5)


class Signing:
    """Signatures being made (:meth:`SigningSession.start`); :meth:`result` waits for them."""

    def __init__(self, pool: SigningPool | None, signers: Sequence[SignerLike], messages: Sequence[bytes],
                 sent: list[tuple[_Worker, int]], done: list[list[bytes]] | None,
                 before: Signing | None = None) -> None:
        self.pool = pool
        self.before = before  # started earlier on the same workers: its answers come first
        self.signers = signers
        self.keyids = tuple(s.keyid for s in signers)
        self.messages = messages
        self._sent = sent
        self._done = done

    def result(self) -> list[list[bytes]]:
        if self._done is None:
            if self.before is not None:
                self.before.result()  # the workers answer in the order they were asked
                self.before = None
            out: list[list[bytes]] = []
            for worker, count in self._sent:
                try:
                    out += worker.receive(count, len(self.signers))
                except (OSError, EOFError) as exc:
                    assert self.pool is not None
                    self.pool._fail(exc)
                    out += _sign_here(self.signers, self.messages[len(out):])
                    break
            self._done = out
        return self._done


class SigningSession:
    """Starts signing batches on the pool's workers without waiting (all of a batch goes to the workers)."""

    def __init__(self, pool: SigningPool, held: bool) -> None:
        self.pool = pool
        self.held = held  # False: another thread has the workers; batches are signed here, at start
        self.started: list[Signing] = []

    def start(self, signers: Sequence[SignerLike], messages: Sequence[bytes]) -> Signing:
        pool = self.pool
        if (not self.held or not pool.workers or len(messages) < pool.min_shared
                or not all(isinstance(s, Signer) for s in signers)):
            return Signing(None, signers, messages, [], _sign_here(signers, messages))
        pems = [pool._pem(s) for s in signers]  # type: ignore[arg-type]  # all Signer (checked above)
        size = -(-len(messages) // pool.workers)
        sent: list[tuple[_Worker, int]] = []
        try:
            while len(pool._running) < pool.workers:
                pool._running.append(_Worker())
            for worker, start in zip(pool._running, range(0, len(messages), size), strict=False):
                chunk = messages[start:start + size]
                worker.send(pems, chunk)
                sent.append((worker, len(chunk)))
        except OSError as exc:
            pool._fail(exc)
            return Signing(None, signers, messages, [], _sign_here(signers, messages))
        signing = Signing(pool, signers, messages, sent, None, self.started[-1] if self.started else None)
        self.started.append(signing)
        return signing


def _sign_here(signers: Sequence[SignerLike], messages: Sequence[bytes]) -> list[list[bytes]]:
    return [[signer.sign(message) for signer in signers] for message in messages]


_SHARED: SigningPool | None = None
_SHARED_LOCK = threading.Lock()


def shared_pool() -> SigningPool:
    """The process's one pool (its workers start at the first large batch and end with the process)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = SigningPool()
            atexit.register(_SHARED.close)
        return _SHARED
