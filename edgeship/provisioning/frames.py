"""Frames of the serial provisioning link: pure encoding, decoding and resynchronisation.

Wire layout of one frame (all integers big-endian)::

    offset  size  field
    0       2     magic  0xE5 0x5A
    2       1     type   (FrameType)
    3       2     seq    frame sequence number (DATA: chunk index)
    5       2     length payload length, at most MAX_PAYLOAD
    7       2     hcheck low 16 bits of CRC-32 of bytes 2 .. 7 (type, seq, length)
    9       n     payload
    9+n     4     crc32  CRC-32 (zlib/IEEE 802.3) of bytes 2 .. 9+n (everything after the magic)

A serial line drops and flips bytes, and a receiver may start listening in the
middle of a frame. :class:`FrameDecoder` therefore never trusts a position: it
scans for the magic, and whenever a candidate fails (length too large, CRC wrong)
it skips one byte and scans again over what it already holds, so a real frame
hidden behind garbage or behind a corrupted frame is still found. The header check
lets a damaged length field be refused at once instead of making the decoder wait
for up to ``MAX_PAYLOAD`` bytes that will never form a frame; ``resync()`` covers the
rare damaged header that passes it (the caller calls it when the line goes quiet).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "TRAILER_SIZE",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "encode_frame",
]

MAGIC = b"\xe5\x5a"
MAX_PAYLOAD = 1024  # bytes of payload in one frame; DATA chunks are at most this
_HEADER = struct.Struct(">2sBHHH")
HEADER_SIZE = _HEADER.size  # 9
TRAILER_SIZE = 4
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + TRAILER_SIZE
_MAX_BUFFER = 4 * MAX_FRAME  # bytes the decoder keeps while looking for a frame


class FrameType(IntEnum):
    """Who sends what: S = sender (operator), R = receiver (device)."""

    HELLO = 0x01  # S: version, bundle size, bundle sha256
    HELLO_ACK = 0x02  # R: version, largest bundle it accepts
    DATA = 0x10  # S: one chunk; seq = chunk index
    ACK = 0x11  # R: chunk seq received
    NAK = 0x12  # R: please (re)send chunk seq (the next one it expects)
    DONE = 0x20  # S: every chunk sent; seq = chunk count
    CONFIRM = 0x21  # R: bundle written; payload = its sha256
    FIN = 0x22  # S: confirmation seen; the receiver may stop
    ERROR = 0x7F  # either: UTF-8 sentence, the session is over


@dataclass(frozen=True)
class Frame:
    type: FrameType
    seq: int = 0
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self)


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire; raises ValueError for an out-of-range field."""
    if not 0 <= frame.seq <= 0xFFFF:
        raise ValueError(f"frame seq {frame.seq} is outside 0..65535")
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(frame.payload)} bytes is over {MAX_PAYLOAD}")
    fields = struct.pack(">BHH", int(frame.type), frame.seq, len(frame.payload))
    body = fields + struct.pack(">H", zlib.crc32(fields) & 0xFFFF) + frame.payload
    return MAGIC + body + struct.pack(">I", zlib.crc32(body))


class FrameDecoder:
    """Turns an unreliable byte stream into whole, CRC-checked frames.

    ``feed`` may be given any slicing of the stream (a byte at a time or many frames
    at once). ``bad_frames`` counts candidates that looked like frames but failed the
    CRC or carried an unknown type; ``skipped`` counts bytes thrown away. Neither is
    an error: the sender's retransmission repairs them.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.bad_frames = 0
        self.skipped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                break
            frames.append(frame)
        if len(self._buffer) > _MAX_BUFFER:  # cannot happen with _next's rules; a hard cap all the same
            self.skipped += len(self._buffer) - _MAX_BUFFER
            del self._buffer[: len(self._buffer) - _MAX_BUFFER]
        return frames

    def resync(self) -> list[Frame]:
        """Give up on the partial candidate at the front (the line went quiet) and rescan."""
        if not self._buffer:
            return []
        self.bad_frames += 1
        self._skip(1)
        return self.feed(b"")

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a frame."""
        return len(self._buffer)

    def _skip(self, count: int) -> None:
        self.skipped += count
        del self._buffer[:count]

    def _next(self) -> Frame | None:
        buf = self._buffer
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                keep = 1 if buf.endswith(MAGIC[:1]) else 0  # the first magic byte may be at the end
                self._skip(len(buf) - keep)
                return None
            if start:
                self._skip(start)
            if len(buf) < HEADER_SIZE:
                return None
            _, kind, seq, length, check = _HEADER.unpack_from(buf)
            if length > MAX_PAYLOAD or zlib.crc32(bytes(buf[2:7])) & 0xFFFF != check:
                self.bad_frames += 1
                self._skip(1)
                continue
            end = HEADER_SIZE + length + TRAILER_SIZE
            if len(buf) < end:
                return None
            body = bytes(buf[2 : HEADER_SIZE + length])
            (crc,) = struct.unpack_from(">I", buf, HEADER_SIZE + length)
            if zlib.crc32(body) != crc or kind not in _TYPES:
                self.bad_frames += 1
                self._skip(1)
                continue
            payload = bytes(buf[HEADER_SIZE : HEADER_SIZE + length])
            del buf[:end]
            return Frame(FrameType(kind), seq, payload)


_TYPES = {int(t) for t in FrameType}
