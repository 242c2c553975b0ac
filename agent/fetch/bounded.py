"""One bounded HTTP GET: a size limit, a minimum rate over a window, a deadline, and cancellation.

The defence against TUF's "endless data" and "slow retrieval" attacks, kept apart from
the blob cache so that any downloader (today :class:`~edgeship.agent.fetch.download.BlobCache`,
later a fetcher of content-addressed parts) gets the same guarantees:

- **size**: :meth:`Body.copy` hands at most ``limit`` bytes to its writer and reads at
  most one byte more; that byte ends the transfer with :class:`SizeExceededError`. A
  ``Content-Length`` above the limit is refused before a byte is read.
- **rate**: in every window of :attr:`FetchLimits.window` seconds at least
  ``min_rate * window`` bytes must arrive, else :class:`TooSlowError`; one read waits at
  most a window (the socket timeout), so a silent host is caught as surely as a trickle.
- **deadline**: the whole transfer gets ``deadline + length / min_rate`` seconds, checked
  after every read (so it may be overrun by at most one window).
- **cancellation**: :meth:`Cancel.cancel` (any thread) shuts the transfer's sockets down,
  which wakes a blocked read at once; the transfer then raises :class:`CancelledError`.

Reads use ``read1`` (at most one system call), so a host sending a byte at a time is
seen byte by byte instead of inside one blocking ``read(1 MiB)``. Locations are untrusted:
only ``http(s)://`` URLs are opened, and redirects (urllib's, at most 10) must stay
http(s). HTTP is the standard library's: importing httpx would pull its command-line
extras into the agent's memory (ADR 0011).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from edgeship.errors import TransportError, UnreachableError
from edgeship.records import record

if TYPE_CHECKING:
    import http.client  # imported by the first download, with urllib (ADR 0043, 0046)

__all__ = [
    "Body",
    "Cancel",
    "CancelledError",
    "DownloadError",
    "FetchLimits",
    "HostUnreachableError",
    "ResumeRefusedError",
    "SizeExceededError",
    "SizeMismatchError",
    "TooSlowError",
    "open_range",
]

CHUNK = 256 * 1024  # bytes asked for per read (read1 returns what one system call brings)


class DownloadError(TransportError):
    """A blob could not be fetched (network, HTTP status, limits); a retry may succeed."""


class HostUnreachableError(DownloadError, UnreachableError):
    """The host refused, reset, timed out or answered 502/503/504: it is down, not wrong; wait and retry."""


class SizeExceededError(DownloadError):
    """The host sent, or announced, more bytes than the signed size: never written past it."""


class SizeMismatchError(DownloadError):
    """The host announced fewer bytes than the signed size: it serves another blob."""


class TooSlowError(DownloadError):
    """Fewer bytes than the minimum rate arrived in a window, or the deadline passed."""


class ResumeRefusedError(DownloadError):
    """A ``Range`` request was answered with another range: the bytes kept so far cannot be resumed."""


class CancelledError(DownloadError):
    """:meth:`Cancel.cancel` was called (newer work arrived, or the agent stops); not a failure of the host."""


@record
class FetchLimits:
    """How slow a transfer may be before it is abandoned (its bytes are kept for a resume)."""

    min_rate: float = 1024.0  # bytes per second, averaged over each window
    window: float = 30.0  # seconds; also the longest a single read (or the connect) may wait
    deadline: float = 300.0  # seconds for the whole transfer, plus length / min_rate

    def __post_init__(self) -> None:
        if self.min_rate <= 0 or self.window <= 0 or self.deadline <= 0:
            raise ValueError(f"FetchLimits must be positive, not {self}")

    def deadline_for(self, length: int) -> float:
        """Seconds a transfer of ``length`` bytes may take: the base deadline plus the time at the minimum rate."""
        return self.deadline + length / self.min_rate


class Cancel:
    """A cancellation token shared by the thread that runs transfers and the threads that stop them.

    Invariant: once :meth:`cancel` returned, no transfer that checks this token writes
    another chunk, and a blocked read is woken (its socket is shut down). :meth:`reset`
    re-arms the token; the owner calls it *before* looking for newer work, so a
    cancellation that races with the reset is never lost (see ``agent/daemon.py``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._hooks: dict[int, Callable[[], None]] = {}
        self._next = 0

    @property
    def reason(self) -> str | None:
        """Why the token was cancelled, or None while it is armed."""
        return self._reason

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
            hooks = list(self._hooks.values())
        for hook in hooks:
            with contextlib.suppress(OSError):
                hook()

    def reset(self) -> None:
        with self._lock:
            self._reason = None

    @contextlib.contextmanager
    def hook(self, action: Callable[[], None]) -> Iterator[None]:
        """Run ``action`` on :meth:`cancel` while the block runs (at once if already cancelled)."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._hooks[key] = action
            cancelled = self._reason is not None
        if cancelled:
            with contextlib.suppress(OSError):
                action()
        try:
            yield
        finally:
            with self._lock:
                self._hooks.pop(key, None)

    def check(self) -> None:
        """Raise :class:`CancelledError` if the token was cancelled."""
        reason = self._reason
        if reason is not None:
            raise CancelledError(f"{reason}; the bytes received are kept for a resume")


class Connections:
    """Makes urllib's connections and remembers their sockets, so that a cancellation can shut them down.

    The socket is remembered at connect time: urllib drops ``connection.sock`` as soon as
    the headers are read (the response keeps reading from the same file descriptor). A
    socket connected after :meth:`Cancel.cancel` ran is shut down at once.
    """

    def __init__(self, cancel: Cancel) -> None:
        self.cancel = cancel
        self.sockets: list[socket.socket] = []
        self.made: list[http.client.HTTPConnection] = []

    def factory(self, cls: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        remember = self._remember

        class Remembering(cls):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                remember(self.sock)

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            connection: http.client.HTTPConnection = Remembering(host, **kwargs)
            self.made.append(connection)
            return connection

        return make

    def _remember(self, sock: socket.socket) -> None:
        self.sockets.append(sock)  # then look: cancel() sets its reason, then looks at the sockets
        if self.cancel.reason is not None:
            self.shutdown()

    def shutdown(self) -> None:
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: also wakes a TLS read


class Body:
    """An open answer to a GET: :attr:`status` 200 (from byte 0), 206 (from :attr:`start`) or 416."""

    def __init__(
        self,
        url: str,
        status: int,
        start: int,
        announced: int | None,
        response: Any,
        limits: FetchLimits,
        cancel: Cancel,
        clock: Callable[[], float],
        began: float,
    ) -> None:
        self.url = url
        self.status = status
        self.start = start  # the byte of the blob the body begins with
        self.announced = announced  # Content-Length, when the host sent one
        self._response = response
        self._limits = limits
        self._cancel = cancel
        self._clock = clock
        self._began = began

    def copy(self, write: Callable[[bytes], None], limit: int) -> int:
        """Hand the body to ``write``, at most ``limit`` bytes; return how many arrived.

        Fewer than ``limit`` means the host closed early (the caller decides: resume later).
        Raises :class:`SizeExceededError` (more than ``limit``, or announced so),
        :class:`SizeMismatchError` (fewer announced: another blob), :class:`TooSlowError`,
        :class:`CancelledError` or :class:`DownloadError` (the connection broke).
        """
        if self.announced is not None and self.announced > limit:
            raise SizeExceededError(
                f"{self.url} announced {self.announced} bytes but only {limit} are expected (the signed size); "
                "refused before reading. The host serves the wrong blob: fix it."
            )
        if self.announced is not None and self.announced < limit:
            raise SizeMismatchError(
                f"{self.url} announced {self.announced} bytes but {limit} are expected (the signed size): the blob "
                "it serves was altered or corrupted; the hub must serve the right blob."
            )
        import http.client  # loaded by open_range already

        limits = self._limits
        deadline = self._began + limits.deadline_for(limit)
        window_start, window_bytes = self._began, 0
        received = 0
        while True:
            self._cancel.check()
            try:
                chunk = self._response.read1(min(CHUNK, limit - received + 1))
            except TimeoutError as exc:
                self._cancel.check()
                raise TooSlowError(
                    f"{self.url} sent nothing for {limits.window:g} s (download_rate_window); "
                    f"{received} bytes of this transfer are kept and the next try resumes."
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._cancel.check()
                raise HostUnreachableError(
                    f"Reading {self.url} failed ({exc}) after {received} bytes; they are kept and the next try resumes."
                ) from exc
            if not chunk:
                self._cancel.check()  # a shut-down socket reads as the end of the body
                return received
            if received + len(chunk) > limit:
                raise SizeExceededError(
                    f"{self.url} sent more than the {limit} bytes expected (the signed size); the transfer was "
                    "cut off there. The host serves the wrong blob or endless data: fix it."
                )
            write(chunk)
            received += len(chunk)
            window_bytes += len(chunk)
            now = self._clock()
            if now > deadline:
                raise TooSlowError(
                    f"{self.url} did not finish within {limits.deadline_for(limit):.0f} s (download_deadline plus "
                    f"the size at download_min_rate); {received} bytes are kept and the next try resumes."
                )
            if now - window_start >= limits.window:
                if window_bytes < limits.min_rate * limits.window:
                    raise TooSlowError(
                        f"{self.url} sent {window_bytes} bytes in {now - window_start:.0f} s, below the minimum "
                        f"{limits.min_rate:g} bytes/s (download_min_rate); {received} bytes are kept and the "
                        "next try resumes."
                    )
                window_start, window_bytes = now, 0


@contextlib.contextmanager
def open_range(
    url: str,
    start: int,
    *,
    limits: FetchLimits,
    cancel: Cancel,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Body]:
    """GET ``url`` from byte ``start`` (a ``Range`` request when above 0); the sockets close on exit.

    A 416 (range not satisfiable) is a :class:`Body` with status 416 and nothing to read;
    any other status but 200 and 206 is a :class:`DownloadError`. A 206 must begin at
    ``start`` (``Content-Range``), else :class:`ResumeRefusedError`: the host did not
    resume where asked.
    """
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"Blob location {url!r} is not an http(s) URL.")
    cancel.check()
    # urllib.request and http.client at the first download only: the idle agent holds neither (ADR 0043, 0046)
    import http.client
    import urllib.error
    import urllib.request

    from edgeship.agent.fetch.opener import build_opener

    connections = Connections(cancel)
    opener = build_opener(connections)
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})  # noqa: S310
    began = clock()
    with cancel.hook(connections.shutdown):
        response: Any = None
        try:
            try:
                response = opener.open(request, timeout=limits.window)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 416 and start:
                    yield Body(url, 416, start, 0, None, limits, cancel, clock, began)
                    return
                if exc.code in _HOST_DOWN:
                    raise HostUnreachableError(
                        f"{url} answered HTTP {exc.code}; the next try waits and retries."
                    ) from exc
                raise DownloadError(f"{url} answered HTTP {exc.code}; check the blob host and location.") from exc
            except TimeoutError as exc:
                cancel.check()
                raise HostUnreachableError(
                    f"{url} did not answer within {limits.window:g} s (download_rate_window); the next try waits "
                    "and retries."
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                cancel.check()
                kind = DownloadError if _misconfigured(exc) else HostUnreachableError
                raise kind(f"Downloading {url} failed ({exc}); check the network and the blob host.") from exc
            status = response.status
            if status not in (200, 206):
                raise DownloadError(f"{url} answered HTTP {status}; check the blob host and location.")
            body_start = 0
            if status == 206:
                if _range_start(response.headers.get("Content-Range")) != start:
                    raise ResumeRefusedError(
                        f"{url} answered a request for bytes {start}- with "
                        f"{response.headers.get('Content-Range')!r}; the host does not resume correctly."
                    )
                body_start = start
            length = response.headers.get("Content-Length")
            announced = int(length) if length is not None and length.isdigit() else None
            yield Body(url, status, body_start, announced, response, limits, cancel, clock, began)
        finally:
            if response is not None:
                with contextlib.suppress(Exception):
                    response.close()
            connections.shutdown()
            for connection in connections.made:
                with contextlib.suppress(Exception):
                    connection.close()


_HOST_DOWN = frozenset({502, 503, 504})  # a proxy or the hub says it is down or overloaded: wait, not fail


def _misconfigured(exc: BaseException) -> bool:
    """A TLS failure (a certificate that does not verify) or a bad URL is no outage: waiting will not cure it."""
    import http.client
    import ssl  # loaded already when the broker link uses TLS

    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (ssl.SSLError, ValueError)) or isinstance(exc, http.client.InvalidURL)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``bytes first-last/total``; None when missing or malformed."""
    if content_range is None or not content_range.startswith("bytes "):
        return None
    first, _, _rest = content_range[6:].partition("-")
    return int(first) if first.strip().isdigit() else None
