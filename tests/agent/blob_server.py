"""The blob host for agent tests: a real HTTP server with ``Range``, which can misbehave on purpose.

``ThreadingHTTPServer`` serving ``/blobs/sha256:<hex>`` from a folder, with a request
log, a switch that cuts the next answer short, and per-blob faults (endless data, a
trickle, silence, broken Range handling) for the bounded-download tests (ADR 0018).
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["BlobServer"]


class BlobServer:
    """Serves ``root/<hex>`` at ``/blobs/sha256:<hex>``; ``cut_next`` sends only that many bytes once.

    ``misbehave(digest, mode)`` makes it a hostile or broken host for that blob (the faults
    of TUF's "endless data" and "slow retrieval" attacks, and hosts that cannot resume):

    - ``endless``: the blob, then random bytes without end (no Content-Length), until the
      client hangs up or ``endless_cap`` bytes went out;
    - ``announce``: a Content-Length a thousand times the blob's, then the same endless body;
    - ``trickle``: the blob one byte every ``trickle_interval`` seconds (Range honoured);
    - ``silent``: the headers, then nothing at all (Range honoured);
    - ``ignore_range``: always 200 with the whole blob; ``refuse_range``: 416 to every Range;
      ``wrong_range``: 206 with the blob from byte 0 whatever was asked;
    - ``unavailable``: 503, as a proxy in front of a hub that is down answers.

    ``hangups`` records ``(path, bytes of the body sent)`` when a client closed a
    misbehaving transfer; ``cond`` is notified on every request and hang-up.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_next: int | None = None
        self.modes: dict[str, str] = {}  # hex digest -> misbehaviour
        self.trickle_interval = 0.2  # seconds between bytes in "trickle" mode
        self.endless_cap = 64 * 2**20  # bytes an endless answer sends at most (a safety net for the test machine)
        self.hangups: list[tuple[str, int]] = []
        self.sent: dict[str, int] = {}  # path -> body bytes sent by the last misbehaving transfer so far
        self.bodies: list[tuple[str, int]] = []  # (path, body bytes written) of each well-behaved answer
        self.cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.cond:
                    server.requests.append((self.path, self.headers.get("Range")))
                    server.cond.notify_all()
                name = self.path.removeprefix("/blobs/sha256:")
                path = server.root / name
                if not self.path.startswith("/blobs/sha256:") or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                mode = server.modes.get(name)
                if mode == "unavailable":
                    self.send_error(503)
                    return
                if mode is not None and mode not in ("ignore_range", "refuse_range", "wrong_range"):
                    server._misbehave(self, mode, data)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and mode == "refuse_range":
                    self._empty(416, len(data))
                    return
                if rng and mode == "wrong_range":
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
                elif rng and mode != "ignore_range" and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(data):
                        self._empty(416, len(data))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut, server.cut_next = server.cut_next, None
                try:
                    self.wfile.write(body if cut is None else body[:cut])
                except (BrokenPipeError, ConnectionResetError):  # the client refused the answer and hung up
                    self.close_connection = True
                    return
                with server.cond:
                    server.bodies.append((self.path, len(body if cut is None else body[:cut])))
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def _empty(self, status: int, total: int) -> None:
                self.send_response(status)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def misbehave(self, digest: str, mode: str | None) -> None:
        """Serve ``digest`` as ``mode`` from the next request on (None: behave again)."""
        name = digest.removeprefix("sha256:")
        if mode is None:
            self.modes.pop(name, None)
        else:
            self.modes[name] = mode

    def _misbehave(self, handler: BaseHTTPRequestHandler, mode: str, data: bytes) -> None:
        rng = handler.headers.get("Range")
        if mode in ("trickle", "silent") and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])  # slow, but resumes properly
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            handler.send_response(200)
        if mode == "announce":
            handler.send_header("Content-Length", str(len(data) * 1000))
        elif mode in ("trickle", "silent"):
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.flush()
        handler.close_connection = True
        conn = handler.connection
        sent = 0
        try:
            if mode == "silent":
                while not _client_gone(conn, timeout=0.2):
                    pass
                raise ConnectionResetError
            if mode == "trickle":
                for byte in data:
                    if _client_gone(conn, timeout=self.trickle_interval):
                        raise ConnectionResetError
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    sent += 1
                    self.sent[handler.path] = sent
                return
            handler.wfile.write(data)
            sent = len(data)
            chunk = os.urandom(64 * 1024)
            while sent < self.endless_cap:
                handler.wfile.write(chunk)
                sent += len(chunk)
                self.sent[handler.path] = sent
        except (BrokenPipeError, ConnectionResetError):
            with self.cond:
                self.hangups.append((handler.path, sent))
                self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Block until ``predicate()`` (checked on every request and hang-up) holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"blob server: condition not met within {timeout} s; requests "
                                         f"{self.requests[-5:]}, hang-ups {self.hangups[-5:]}")
                self.cond.wait(min(left, 0.2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def put(self, data: bytes) -> str:
        """Serve ``data``; returns its digest."""
        digest = hashlib.sha256(data).hexdigest()
        (self.root / digest).write_bytes(data)
        return f"sha256:{digest}"

    def put_as(self, digest: str, data: bytes) -> None:
        """Serve ``data`` under another blob's name (a tampered mirror)."""
        (self.root / digest.removeprefix("sha256:")).write_bytes(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _client_gone(conn: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` s; True if the client closed its end (readable with nothing to read)."""
    readable, _, _ = select.select([conn], [], [], timeout)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
