"""The socket-level floor: the least any hub could take to get signed documents to N verifying devices.

One MQTT 3.1.1 connection on a raw socket (no paho, no hub): it subscribes to every
device's ``reported`` topic, then writes one pre-built PUBLISH (retained, QoS 1) of a
signed document per device, back to back, answers the reports' QoS 1 with PUBACKs,
and stops the clock when every device has reported that document applied (code 200,
``lastAppliedSequence`` at least its sequence). The devices are the benchmark's own
simulators, so they do exactly what they do in the fan-out (``accept_document``: the
hub's and the release's signatures, replay, expiry; then ``build_report`` out,
retained, QoS 1). The ratio fan-out / floor is then what the hub and its MQTT path add
to the same device work, on the same machine, in the same run.

The documents are the hub's own fan-out documents with the next sequence, re-signed
with the hub's key before the clock starts (:func:`next_documents`), so the devices
accept them as they accepted the fan-out's. The hub's bridge is stopped first: no
other client receives the reports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import selectors
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, SignerLike, sign_envelope

__all__ = ["FloorResult", "next_documents", "run_floor"]

TOPIC_ROOT = b"edgeship/v1/devices/"
CHUNK = 256 * 1024  # bytes of PUBLISH packets per send()


@dataclass
class FloorResult:
    seconds: float = 0.0  # first byte out -> last device reported the document applied
    last_puback: float = 0.0  # seconds from the start
    first_report_in: float = 0.0
    last_report_in: float = 0.0
    cpu: float = 0.0  # CPU seconds of the floor's publisher and collector
    reports: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def next_documents(envelopes: Mapping[str, bytes], signers: Sequence[SignerLike]) -> dict[str, tuple[int, bytes]]:
    """Each device's document with the next sequence, signed again: ``{device: (sequence, envelope)}``."""
    out: dict[str, tuple[int, bytes]] = {}
    for device_id, envelope in envelopes.items():
        document = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        document["sequence"] += 1
        payload = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        signed = sign_envelope(payload, DEPLOYMENT_PAYLOAD_TYPE, signers)
        out[device_id] = (document["sequence"], json.dumps(signed.to_dict(), sort_keys=True,
                                                           separators=(",", ":")).encode())
    return out


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body)) + body


def _string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH, QoS 1, retained."""
    return _packet(0x33, _string(topic) + packet_id.to_bytes(2, "big") + payload)


class _Connection:
    """A minimal MQTT 3.1.1 client: one non-blocking socket, a read buffer, a packet parser."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connect = _string(b"MQTT") + bytes([4, 0x02]) + (600).to_bytes(2, "big") + _string(client_id.encode())
        self.sock.sendall(_packet(0x10, connect))
        self.buffer = bytearray()
        kind, _body = self.read_packet()
        if kind >> 4 != 2:
            raise RuntimeError(f"floor: expected CONNACK, got packet type {kind >> 4}")
        self.sock.setblocking(False)

    def read_packet(self) -> tuple[int, bytes]:
        """Blocking read of one packet (only during the handshake)."""
        while True:
            packet = self._next()
            if packet is not None:
                return packet
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("floor: the broker closed the connection")
            self.buffer += chunk

    def _next(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
        if len(buf) < i + length:
            return None
        kind, body = buf[0], bytes(buf[i:i + length])
        del buf[:i + length]
        return kind, body

    def packets(self) -> list[tuple[int, bytes]]:
        """Every whole packet received so far (non-blocking)."""
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("floor: the broker closed the connection")
                self.buffer += chunk
        except BlockingIOError:
            pass
        out = []
        while (packet := self._next()) is not None:
            out.append(packet)
        return out


def run_floor(host: str, port: int, documents: Mapping[str, tuple[int, bytes]], timeout: float = 120.0) -> FloorResult:
    """Push ``documents`` (``{device: (sequence, envelope)}``) and wait until every device reported it applied."""
    conn = _Connection(host, port, f"floor-{time.monotonic_ns()}")
    conn.sock.setblocking(True)
    conn.sock.sendall(_packet(0x82, (1).to_bytes(2, "big") + _string(TOPIC_ROOT + b"+/reported") + b"\x01"))
    while conn.read_packet()[0] >> 4 != 9:  # SUBACK; retained reports before it are not ours
        pass
    conn.sock.setblocking(False)
    expected = {device.encode(): seq for device, (seq, _envelope) in documents.items()}
    packets = [publish_packet(TOPIC_ROOT + device.encode() + b"/desired", envelope, (i % 65535) + 1)
               for i, (device, (_seq, envelope)) in enumerate(documents.items())]
    outgoing = bytearray(b"".join(packets))  # everything still to write, PUBACKs queued behind
    result = FloorResult()
    done: set[bytes] = set()
    counts = {"pubacks": 0, "retained_skipped": 0, "not_applied": 0}
    selector = selectors.DefaultSelector()
    selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    cpu = time.thread_time()
    started = time.perf_counter()
    deadline = started + timeout
    sent = 0
    acks: list[bytes] = []
    while len(done) < len(expected):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"floor: {len(done)} of {len(expected)} devices reported in {timeout:g} s")
        for _key, events in selector.select(0.5):
            if events & selectors.EVENT_WRITE and sent < len(outgoing):
                with contextlib.suppress(BlockingIOError):
                    sent += conn.sock.send(memoryview(outgoing)[sent:sent + CHUNK])
                if sent >= len(outgoing):
                    del outgoing[:sent]
                    sent = 0
                    selector.modify(conn.sock, selectors.EVENT_READ)
            if not events & selectors.EVENT_READ:
                continue
            now = time.perf_counter()
            for kind, body in conn.packets():
                kind_type = kind >> 4
                if kind_type == 4:
                    counts["pubacks"] += 1
                    result.last_puback = now - started
                elif kind_type == 3:
                    topic_length = int.from_bytes(body[:2], "big")
                    topic = body[2:2 + topic_length]
                    offset = 2 + topic_length
                    if (kind >> 1) & 3:
                        acks.append(b"\x40\x02" + body[offset:offset + 2])
                        offset += 2
                    if kind & 1:
                        counts["retained_skipped"] += 1
                        continue
                    device = topic[len(TOPIC_ROOT):-len(b"/reported")]
                    report: Any = json.loads(body[offset:])
                    result.reports += 1
                    if not result.first_report_in:
                        result.first_report_in = now - started
                    result.last_report_in = now - started
                    status = report.get("status") or {}
                    applied = report.get("lastAppliedSequence")
                    wanted = expected.get(device, 1 << 62)
                    if status.get("code") == 200 and isinstance(applied, int) and applied >= wanted:
                        done.add(device)
                    else:
                        counts["not_applied"] += 1
            if acks:  # after whatever is still queued: a packet is never split by another
                if sent >= len(outgoing):
                    selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                outgoing += b"".join(acks)
                acks = []
    result.seconds = time.perf_counter() - started
    result.cpu = time.thread_time() - cpu
    result.counts = counts
    selector.close()
    conn.sock.close()
    return result
