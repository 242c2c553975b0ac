"""The agent's GET to a module's own server (``agent/runtimes/local_http.py``) against real servers on loopback.

Well-formed answers come from ``http.server`` (the standard library's server, HTTP/1.0 and
1.1) and are read side by side with ``http.client``, which the health probe and the scrape
used before (ADR 0046): both must read the same status and body. Answers no library server
sends on purpose (a malformed status line, a body cut short, a trickle, endless data, chunks)
come from a real TCP server on a free port that sends the given bytes and closes.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from parts import free_port

from edgeship.agent.runtimes.base import probe_health
from edgeship.agent.runtimes.local_http import MAX_HEAD, LocalHTTPError, get
from edgeship.agent.telemetry.sampler import _get_metrics
from edgeship.scoring.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

METRICS = Metrics()
METRICS_BODY = METRICS.render()[0]
# path -> (status, body, send Content-Length)
ROUTES: dict[str, tuple[int, bytes, bool]] = {
    "/": (200, b"Healthy", True),
    "/v2/health/ready": (200, b'{"ready":true}', True),
    "/metrics": (200, METRICS_BODY, True),
    "/not-ready": (503, b'{"ready":false}', True),
    "/missing": (404, b"", True),
    "/crash": (500, b"Internal Server Error", True),
    "/empty": (204, b"", False),
    "/to-close": (200, b"read until the server closes\n" * 40, False),
}


def _handler(protocol: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = protocol

        def do_GET(self) -> None:
            status, body, with_length = ROUTES.get(self.path, (404, b"", True))
            self.send_response(status)
            if with_length:
                self.send_header("Content-Length", str(len(body)))
            elif protocol == "HTTP/1.1":
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(params=["HTTP/1.0", "HTTP/1.1"])
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(request.param))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _with_http_client(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", list(ROUTES))
def test_it_reads_what_http_client_reads(server: int, path: str) -> None:
    answer = get(server, path, timeout=5)
    assert (answer.status, answer.body) == _with_http_client(server, path) == ROUTES[path][:2]


def test_the_probe_and_the_scrape_read_a_real_server(server: int) -> None:
    assert probe_health(server)
    assert _get_metrics(server) == METRICS_BODY.decode()


@pytest.fixture
def raw() -> Iterator[Callable[..., int]]:
    """A TCP server on a free port answering each connection with ``steps`` (bytes, or seconds to pause)."""
    listeners: list[socket.socket] = []

    def start(*steps: bytes | float) -> int:
        listener = socket.create_server(("127.0.0.1", free_port()))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(4096)
                    try:
                        for step in steps:
                            if isinstance(step, bytes):
                                conn.sendall(step)
                            else:
                                time.sleep(step)
                    except OSError:
                        pass

        threading.Thread(target=serve, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for listener in listeners:
        listener.close()


def _error(port: int, **kwargs: Any) -> str:
    with pytest.raises(LocalHTTPError) as raised:
        get(port, "/metrics", **kwargs)
    return str(raised.value)


def test_a_chunked_body_is_read_with_its_extensions_and_trailers(raw: Callable[..., int]) -> None:
    port = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
               b"5;ext=1\r\nhello\r\n", b"7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")  # fmt: skip
    assert get(port, "/metrics").body == b"hello, world"


def test_a_silent_server_is_given_up_at_the_timeout(raw: Callable[..., int]) -> None:
    port = raw(3.0)
    began = time.monotonic()
    assert "did not answer in full within 0.3 s" in _error(port, timeout=0.3)
    assert time.monotonic() - began < 2.5
    assert not probe_health(port, timeout=0.3)


def test_a_trickling_server_is_cut_off_at_the_timeout_for_the_whole_answer(raw: Callable[..., int]) -> None:
    port = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", *[b".", 0.05] * 100)
    began = time.monotonic()
    assert "did not answer in full within 0.5 s" in _error(port, timeout=0.5)
    assert time.monotonic() - began < 2.5


def test_an_announced_body_over_the_limit_is_refused_before_it_is_read(raw: Callable[..., int]) -> None:
    port = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", b"x" * 1000)
    assert "announced 2000000 bytes, more than the 1048576 this read allows" in _error(port)


def test_endless_data_is_cut_off_at_the_limit(raw: Callable[..., int]) -> None:
    port = raw(b"HTTP/1.0 200 OK\r\n\r\n", *[b"y" * 65536] * 40)
    assert "sent more than the 100000 bytes this read allows" in _error(port, max_body=100_000)
    chunk = b"10000\r\n" + b"z" * 65536 + b"\r\n"
    chunked = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *[chunk] * 4)
    assert "sent more than the 100000 bytes this read allows" in _error(chunked, max_body=100_000)


def test_endless_headers_are_cut_off(raw: Callable[..., int]) -> None:
    port = raw(b"HTTP/1.1 200 OK\r\n", *[b"X-Pad: " + b"p" * 100 + b"\r\n"] * 400)
    assert f"sent more than {MAX_HEAD} bytes of headers; it is no scoring server" in _error(port)


def test_a_server_that_closes_early_is_an_error(raw: Callable[..., int]) -> None:
    port = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"0123456789")
    assert "closed the connection after 10 of the 100 bytes of its body" in _error(port)
    headless = raw(b"HTTP/1.1 200 OK\r\nContent-Le")
    assert "closed the connection in its headers" in _error(headless)
    silent = raw()
    assert "closed the connection in its status line" in _error(silent)
    assert not probe_health(silent)
    assert _get_metrics(silent) is None


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed status line b'SSH-2.0-OpenSSH_9.2'"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/2 200\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "answered HTTP 100, which a GET to it should never get"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line b'no colon here'"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "malformed header line b' folded'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "two different Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length '-1', which is not a number"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "sent its body as 'gzip'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n", "chunk longer than its size"),
    ],
)
def test_a_malformed_answer_is_one_clear_sentence(raw: Callable[..., int], answer: bytes, message: str) -> None:
    port = raw(answer)
    error = _error(port)
    assert message in error and error.startswith(f"http://127.0.0.1:{port}/metrics ")
    assert not probe_health(port)


def test_nothing_listening_and_bad_arguments_are_clear_errors() -> None:
    port = free_port()
    assert "could not be reached" in _error(port) and "is the module's server running?" in _error(port)
    with pytest.raises(LocalHTTPError, match="Port 0 is out of range"):
        get(0, "/")
    for path in ("metrics", "/a b", "/\r\nX: y", "/" + "a" * 1024):
        with pytest.raises(LocalHTTPError, match="is not usable"):
            get(port, path)
    with pytest.raises(LocalHTTPError, match="Host 'a b' is not usable"):
        get(port, "/", host="a b")
