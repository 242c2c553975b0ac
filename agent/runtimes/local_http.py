"""One strict, bounded HTTP/1.1 GET to a module's own scoring server on this device.

The health probe (:func:`~edgeship.agent.runtimes.base.probe_health`) and the telemetry
scrape (``agent/telemetry/sampler.py``) ask the module's server on loopback for ``/``,
``/v2/health/ready`` and ``/metrics`` every few seconds, for as long as the agent runs.
``http.client`` would keep itself and 19 ``email`` modules resident in the idle agent
(0.75 MiB of its resident set, 1.3 MiB of Python heap; h11 costs more), so these GETs are
read here from a plain socket instead (ADR 0046). It is not a general HTTP client: the
blob downloader, which talks to untrusted hosts over TLS, keeps the standard library's.

What it accepts, and refuses with :class:`LocalHTTPError` (one sentence):

- a status line ``HTTP/1.0`` or ``HTTP/1.1``, three digits, an optional reason; no
  interim (1xx) answers;
- at most :data:`MAX_HEAD` bytes of status line and headers, each header
  ``name: value`` (no folded lines);
- a body by ``Content-Length`` (one value; a larger one than ``max_body`` is refused
  before a byte of it is read), by ``Transfer-Encoding: chunked`` (sizes checked against
  ``max_body`` as they come) or up to the close, at most ``max_body`` bytes; a server
  that closes before it sent what it announced is an error;
- the whole exchange within ``timeout`` seconds (connect, request, every read), so a
  server that trickles bytes is cut off as surely as a silent one.

The request says ``Connection: close``; the socket is closed on every path.
"""

from __future__ import annotations

import socket
import time

from edgeship.errors import TransportError
from edgeship.records import record

__all__ = ["MAX_BODY", "MAX_HEAD", "LocalHTTPError", "LocalResponse", "get"]

MAX_HEAD = 16 * 1024  # bytes of status line and headers (and of a chunked body's size lines and trailers)
MAX_BODY = 1024 * 1024  # bytes of body by default; /metrics of a scoring server is a few KiB
_READ = 64 * 1024  # bytes asked for per recv
_NO_BODY = frozenset({204, 304})
_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class LocalHTTPError(TransportError):
    """A module's local HTTP server could not be reached, was too slow, or answered something malformed."""


@record
class LocalResponse:
    """A complete answer: its status, its headers (names lowercased, last one wins) and its body."""

    status: int
    headers: dict[str, str]
    body: bytes


def get(port: int, path: str, *, host: str = "127.0.0.1", timeout: float = 2.0,
        max_body: int = MAX_BODY) -> LocalResponse:
    """GET ``path`` from ``host:port`` and read the whole answer; :class:`LocalHTTPError` on any failure."""
    if not 0 < port < 65536:
        raise LocalHTTPError(f"Port {port} is out of range; give a TCP port between 1 and 65535.")
    if not path.startswith("/") or len(path) > 1024 or not all(33 <= ord(c) < 127 for c in path):
        raise LocalHTTPError(f"Path {path!r} is not usable; give an absolute path of printable ASCII without spaces.")
    if not host or len(host) > 255 or not all(33 <= ord(c) < 127 for c in host):
        raise LocalHTTPError(f"Host {host!r} is not usable; give an address such as 127.0.0.1.")
    if timeout <= 0 or max_body < 0:
        raise LocalHTTPError(f"Timeout {timeout!r} and body limit {max_body!r} must be positive.")
    where = f"http://{host}:{port}{path}"
    reader = _Reader(where, time.monotonic() + timeout, timeout)
    try:
        try:
            reader.sock = socket.create_connection((host, port), timeout=timeout)
            request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                       "Accept-Encoding: identity\r\nUser-Agent: edgeship-agent\r\n\r\n")
            reader.sock.sendall(request.encode("ascii"))
        except TimeoutError as exc:
            raise LocalHTTPError(f"{where} did not take the request within {timeout:g} s; is the module busy?") from exc
        except OSError as exc:
            raise LocalHTTPError(f"{where} could not be reached ({exc}); is the module's server running?") from exc
        status, headers = _read_head(reader)
        body = b"" if status in _NO_BODY else _read_body(reader, headers, max_body)
        return LocalResponse(status, headers, body)
    finally:
        if reader.sock is not None:
            reader.sock.close()


class _Reader:
    """Buffered reads from the socket, each bounded by what is left of the exchange's deadline."""

    def __init__(self, where: str, deadline: float, timeout: float) -> None:
        self.where = where
        self.deadline = deadline
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.closed = False

    def fill(self) -> bool:
        """Read what one recv brings into the buffer; False once the server closed."""
        if self.closed or self.sock is None:
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(_READ)
        except TimeoutError as exc:
            raise self._too_slow() from exc
        except OSError as exc:
            raise LocalHTTPError(f"Reading {self.where} failed ({exc}); is the module's server running?") from exc
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def line(self, limit: int, what: str) -> bytes:
        """One CRLF-ended line (without it), at most ``limit`` bytes (what is left of :data:`MAX_HEAD`)."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                if end > limit:
                    break
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > limit:
                break
            if not self.fill():
                raise LocalHTTPError(f"{self.where} closed the connection in its {what}; is its server healthy?")
        raise LocalHTTPError(f"{self.where} sent more than {MAX_HEAD} bytes of {what}; it is no scoring server.")

    def exactly(self, count: int, what: str) -> bytes:
        while len(self.buffer) < count:
            if not self.fill():
                raise LocalHTTPError(
                    f"{self.where} closed the connection after {len(self.buffer)} of the {count} bytes of its {what}; "
                    "is the module's server healthy?"
                )
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def _too_slow(self) -> LocalHTTPError:
        return LocalHTTPError(f"{self.where} did not answer in full within {self.timeout:g} s; is the module busy?")


def _read_head(reader: _Reader) -> tuple[int, dict[str, str]]:
    used = 0
    status_line = reader.line(MAX_HEAD, "status line")
    parts = status_line.split(b" ", 2)
    if (len(parts) < 2 or parts[0] not in (b"HTTP/1.0", b"HTTP/1.1") or len(parts[1]) != 3
            or not parts[1].isdigit()):
        raise LocalHTTPError(
            f"{reader.where} answered with a malformed status line {status_line[:80]!r}; it is no scoring server."
        )
    status = int(parts[1])
    if not 200 <= status < 600:
        raise LocalHTTPError(f"{reader.where} answered HTTP {status}, which a GET to it should never get.")
    used += len(status_line) + 2
    headers: dict[str, str] = {}
    while True:
        line = reader.line(MAX_HEAD - used, "headers")
        used += len(line) + 2
        if not line:
            return status, headers
        name, colon, value = line.partition(b":")
        text = name.decode("latin-1")
        if not colon or not text or not set(text) <= _TOKEN:
            raise LocalHTTPError(f"{reader.where} sent a malformed header line {line[:80]!r}; it is no scoring server.")
        key = text.lower()
        value_text = value.strip(b" \t").decode("latin-1")
        if key == "content-length" and headers.get(key, value_text) != value_text:
            raise LocalHTTPError(f"{reader.where} sent two different Content-Length headers; it is no scoring server.")
        headers[key] = value_text


def _read_body(reader: _Reader, headers: dict[str, str], max_body: int) -> bytes:
    encoding = headers.get("transfer-encoding", "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise LocalHTTPError(
                f"{reader.where} sent its body as {encoding!r}; only plain and chunked bodies are read."
            )
        return _read_chunked(reader, max_body)
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit():
            raise LocalHTTPError(f"{reader.where} sent Content-Length {length_text[:40]!r}, which is not a number.")
        length = int(length_text)
        if length > max_body:
            raise LocalHTTPError(f"{reader.where} announced {length} bytes, more than the {max_body} this read allows.")
        return reader.exactly(length, "body")
    while len(reader.buffer) <= max_body and reader.fill():
        pass
    if len(reader.buffer) > max_body:
        raise LocalHTTPError(f"{reader.where} sent more than the {max_body} bytes this read allows.")
    return bytes(reader.buffer)


def _read_chunked(reader: _Reader, max_body: int) -> bytes:
    body = bytearray()
    used = 0
    while True:
        size_line = reader.line(MAX_HEAD - used, "chunk sizes")
        used += len(size_line) + 2
        size_text = size_line.partition(b";")[0].strip(b" \t")
        if not size_text or len(size_text) > 16 or not set(size_text) <= _HEX:
            raise LocalHTTPError(f"{reader.where} sent a malformed chunk size {size_line[:40]!r}.")
        size = int(size_text, 16)
        if size == 0:
            while trailer := reader.line(MAX_HEAD - used, "trailers"):  # read and dropped
                used += len(trailer) + 2
            return bytes(body)
        if len(body) + size > max_body:
            raise LocalHTTPError(f"{reader.where} sent more than the {max_body} bytes this read allows.")
        body += reader.exactly(size, "chunk")
        if reader.exactly(2, "chunk end") != b"\r\n":
            raise LocalHTTPError(f"{reader.where} sent a chunk longer than its size said.")
