"""The provisioning link's two state machines: the operator's sender and the device's receiver.

Both run over a :class:`ByteStream` (``read(n, timeout)`` / ``write(data)``), so the
same code drives a pyserial port (:mod:`edgeship.provisioning.serial_port`), a
pseudo-terminal in the tests, or any other byte pipe. The exchange, stop-and-wait
with one frame in flight::

    sender                               receiver
    HELLO(version, size, sha256)   ->
                                   <-    HELLO_ACK(version, max size)   | ERROR(sentence)
    DATA(seq=i, chunk i)           ->                                    i = 0 .. n-1
                                   <-    ACK(i)                        | NAK(expected)
    DONE(seq=n)                    ->    (checks size and sha256, writes the files)
                                   <-    CONFIRM(sha256)               | ERROR(sentence)
    FIN                            ->

Every sender step is retried ``retries`` times, ``ack_timeout`` apart (a NAK
retries at once); a receiver answers duplicates again, so a lost ACK costs one
timeout. The bundle is handed to ``accept`` (which writes it) only after every byte
arrived and its sha256 matched, so a link that dies mid-transfer writes nothing.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgeship.errors import BundleError, EdgeshipError, NoAnswerError, ProvisioningError
from edgeship.provisioning.frames import MAX_PAYLOAD, Frame, FrameDecoder, FrameType

__all__ = [
    "DEFAULT_CHUNK",
    "MAX_BUNDLE",
    "PROTOCOL_VERSION",
    "ByteStream",
    "LinkLimits",
    "TransferReport",
    "receive_bundle",
    "send_bundle",
]

PROTOCOL_VERSION = 1
MAX_BUNDLE = 256 * 1024  # bytes; a bundle is a few KiB of config, keys and certificates
DEFAULT_CHUNK = 512  # bytes of bundle per DATA frame
_HELLO = struct.Struct(">BI32s")  # version, bundle size, sha256
_HELLO_ACK = struct.Struct(">BI")  # version, largest bundle accepted
_READ = 4096  # bytes asked of the stream per read
_QUIET = 0.05  # seconds of silence after which a partial frame is given up

Progress = Callable[[int, int], None]  # (bytes acknowledged, bundle size)


class ByteStream(Protocol):
    """A byte pipe to the peer; ``name`` (e.g. ``/dev/ttyUSB0``) appears in error messages."""

    name: str

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes, as soon as any are there; ``b""`` after ``timeout`` seconds of silence."""
        ...

    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class LinkLimits:
    """Timing and retry budget of one transfer (seconds unless noted)."""

    ack_timeout: float = 1.0  # wait for an answer to one frame before sending it again
    retries: int = 10  # sends of one frame before giving up (count)
    confirm_timeout: float = 10.0  # wait for CONFIRM after DONE: the device writes files meanwhile
    idle_timeout: float = 30.0  # receiver: silence mid-transfer before it gives up
    linger: float = 5.0  # receiver: after CONFIRM, answer a repeated DONE for this long (FIN ends it)
    chunk: int = DEFAULT_CHUNK  # bytes per DATA frame


@dataclass(frozen=True)
class TransferReport:
    sha256: str  # hex digest of the bundle, as the device confirmed it
    size: int  # bytes
    chunks: int
    frames_sent: int  # including retransmissions
    retransmits: int
    seconds: float


class _Link:
    """Frames in and out of a stream, with the decoder's resynchronisation on silence."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.pending: list[Frame] = []
        self.sent = 0

    def send(self, frame: Frame) -> None:
        self.sent += 1
        try:
            self.stream.write(frame.encode())
        except OSError as exc:
            raise ProvisioningError(f"Writing to {self.stream.name} failed ({exc}); check the cable and port.") from exc

    def receive(self, deadline: float, on_damage: Callable[[], None] | None = None) -> Frame | None:
        """The next whole frame, or ``None`` once ``deadline`` (monotonic) has passed.

        A partial frame followed by :data:`_QUIET` seconds of silence is given up (its
        length field was probably damaged); ``on_damage`` runs whenever the decoder
        threw a damaged frame away, so the receiver can ask for it again at once.
        """
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            bad = self.decoder.bad_frames
            try:
                data = self.stream.read(_READ, min(left, _QUIET if self.decoder.pending else 0.25))
            except OSError as exc:
                raise ProvisioningError(f"Reading {self.stream.name} failed ({exc}); check the cable.") from exc
            if data:
                self.pending.extend(self.decoder.feed(data))
            elif self.decoder.pending:
                self.pending.extend(self.decoder.resync())
            if self.decoder.bad_frames > bad and on_damage is not None:
                on_damage()
        return self.pending.pop(0)


def _peer_error(frame: Frame, who: str) -> ProvisioningError:
    text = frame.payload.decode("utf-8", "replace").strip() or "no reason given"
    return ProvisioningError(f"The {who} stopped the transfer: {text}")


def send_bundle(
    stream: ByteStream,
    bundle: bytes,
    *,
    limits: LinkLimits | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Send ``bundle`` to a device running :func:`receive_bundle`; return once it confirmed.

    A bundle over :data:`MAX_BUNDLE` is refused before a byte is written. Raises
    :class:`NoAnswerError` when the device never answers, :class:`ProvisioningError`
    when it refuses (its sentence is quoted) or confirms a different digest.
    """
    lim = limits or LinkLimits()
    if len(bundle) > MAX_BUNDLE:
        raise BundleError(
            f"The provisioning bundle is {len(bundle)} bytes, over the limit of {MAX_BUNDLE}; "
            "leave out what the device does not need (e.g. a long CA chain)."
        )
    if not 1 <= lim.chunk <= MAX_PAYLOAD:
        raise ValueError(f"chunk must be 1..{MAX_PAYLOAD} bytes")
    started = time.monotonic()
    digest = hashlib.sha256(bundle).digest()
    link = _Link(stream)
    retransmits = 0

    def exchange(frame: Frame, expect: FrameType, timeout: float, where: str) -> Frame:
        nonlocal retransmits
        for attempt in range(lim.retries):
            if attempt:
                retransmits += 1
            link.send(frame)
            deadline = time.monotonic() + timeout
            while (reply := link.receive(deadline)) is not None:
                if reply.type is FrameType.ERROR:
                    raise _peer_error(reply, f"device on {stream.name}")
                if reply.type is expect and (expect is not FrameType.ACK or reply.seq == frame.seq):
                    return reply
                if reply.type is FrameType.NAK and reply.seq == frame.seq:
                    break  # the device saw a damaged copy: send again now
        if where == "hello":
            raise NoAnswerError(
                f"No answer from the device on {stream.name} after {lim.retries} tries; "
                "check the cable and that 'edgeship agent provision' is running."
            )
        raise NoAnswerError(
            f"The device on {stream.name} stopped answering {where} after {lim.retries} tries; "
            "check the cable and run the transfer again."
        )

    hello = _HELLO.pack(PROTOCOL_VERSION, len(bundle), digest)
    reply = exchange(Frame(FrameType.HELLO, 0, hello), FrameType.HELLO_ACK, lim.ack_timeout, "hello")
    if len(reply.payload) != _HELLO_ACK.size:
        raise ProvisioningError(f"The device on {stream.name} answered the handshake with a malformed frame.")
    version, accepted = _HELLO_ACK.unpack(reply.payload)
    if version != PROTOCOL_VERSION:
        raise ProvisioningError(
            f"The device on {stream.name} speaks provisioning protocol version {version}, this edgeship "
            f"speaks {PROTOCOL_VERSION}; install the same edgeship version on both sides."
        )
    if len(bundle) > accepted:
        raise BundleError(
            f"The device on {stream.name} accepts bundles of at most {accepted} bytes, "
            f"this one is {len(bundle)}; leave out what the device does not need."
        )
    chunks = [bundle[i : i + lim.chunk] for i in range(0, len(bundle), lim.chunk)]
    done = 0
    for seq, chunk in enumerate(chunks):
        exchange(Frame(FrameType.DATA, seq, chunk), FrameType.ACK, lim.ack_timeout,
                 f"at chunk {seq + 1} of {len(chunks)}")  # fmt: skip
        done += len(chunk)
        if progress is not None:
            progress(done, len(bundle))
    confirm = exchange(Frame(FrameType.DONE, len(chunks)), FrameType.CONFIRM, lim.confirm_timeout,
                       "after the last chunk (it may not have written the files)")  # fmt: skip
    if confirm.payload != digest:
        raise ProvisioningError(
            f"The device on {stream.name} confirmed sha256 {confirm.payload.hex()[:16]}…, "
            f"not the bundle's {digest.hex()[:16]}…; run the transfer again."
        )
    link.send(Frame(FrameType.FIN, len(chunks)))
    return TransferReport(
        sha256=digest.hex(),
        size=len(bundle),
        chunks=len(chunks),
        frames_sent=link.sent,
        retransmits=retransmits,
        seconds=time.monotonic() - started,
    )


def receive_bundle(
    stream: ByteStream,
    accept: Callable[[bytes], None],
    *,
    wait: float | None = None,
    limits: LinkLimits | None = None,
    max_size: int = MAX_BUNDLE,
    progress: Progress | None = None,
) -> bytes:
    """Wait up to ``wait`` seconds (``None``: forever) for a sender, receive its bundle, call
    ``accept(bundle)`` and confirm. Return the bundle.

    ``accept`` runs once, after the size and sha256 matched; an :class:`EdgeshipError`
    it raises is sent to the operator as the reason and raised here. After the
    confirmation the receiver stays ``linger`` seconds to repeat it if it was lost.
    """
    lim = limits or LinkLimits()
    link = _Link(stream)
    start_deadline = None if wait is None else time.monotonic() + wait
    size = -1  # -1: no HELLO yet
    digest = b""
    data = bytearray()
    expected = 0

    def ask_again() -> None:
        link.send(Frame(FrameType.NAK, expected))  # a damaged frame went by: ask for it at once

    def refuse(message: str, error: type[EdgeshipError] = ProvisioningError) -> EdgeshipError:
        link.send(Frame(FrameType.ERROR, 0, message.encode("utf-8")[:MAX_PAYLOAD]))
        return error(f"Refused the operator's transfer on {stream.name}: {message}.")

    while True:
        if size < 0:
            deadline = start_deadline if start_deadline is not None else time.monotonic() + 3600.0
            frame = link.receive(deadline)
        else:
            frame = link.receive(time.monotonic() + lim.idle_timeout, on_damage=ask_again)
        if frame is None:
            if size < 0 and start_deadline is not None:
                raise NoAnswerError(
                    f"No provisioning bundle arrived on {stream.name} within {wait:g} s; "
                    "run 'edgeship device flash' on the operator's machine, then this command again."
                )
            if size >= 0:
                raise ProvisioningError(
                    f"The operator's side went silent on {stream.name} for {lim.idle_timeout:g} s "
                    f"after {len(data)} of {size} bytes; nothing was written, run both sides again."
                )
            continue
        if frame.type is FrameType.HELLO:
            if len(frame.payload) < 1:
                continue
            version = frame.payload[0]
            if version == PROTOCOL_VERSION and len(frame.payload) != _HELLO.size:
                continue  # malformed for our own version: a broken sender; it will retry or give up
            if version != PROTOCOL_VERSION:
                raise refuse(
                    f"the operator speaks provisioning protocol version {version}, this device speaks "
                    f"{PROTOCOL_VERSION}; install the same edgeship version on both sides"
                )
            _, announced, digest = _HELLO.unpack(frame.payload)
            if announced > max_size:
                raise refuse(
                    f"the bundle is {announced} bytes, this device accepts at most {max_size}; "
                    "leave out what the device does not need",
                    BundleError,
                )
            size, data, expected = announced, bytearray(), 0  # a new HELLO starts the transfer over
            link.send(Frame(FrameType.HELLO_ACK, 0, _HELLO_ACK.pack(PROTOCOL_VERSION, max_size)))
        elif size < 0:
            continue  # stray frames before a HELLO (an earlier session's tail)
        elif frame.type is FrameType.DATA:
            if frame.seq == expected:
                if len(data) + len(frame.payload) > size:
                    raise refuse(f"the operator sent more than the announced {size} bytes; run the transfer again")
                data += frame.payload
                expected += 1
                link.send(Frame(FrameType.ACK, frame.seq))
                if progress is not None:
                    progress(len(data), size)
            elif frame.seq < expected:
                link.send(Frame(FrameType.ACK, frame.seq))  # our ACK was lost
            else:
                link.send(Frame(FrameType.NAK, expected))
        elif frame.type is FrameType.DONE:
            if frame.seq != expected or len(data) != size:
                link.send(Frame(FrameType.NAK, expected))
                continue
            if hashlib.sha256(data).digest() != digest:
                raise refuse("the received bundle does not match its announced sha256; run the transfer again")
            bundle = bytes(data)
            try:
                accept(bundle)
            except EdgeshipError as exc:
                link.send(Frame(FrameType.ERROR, 0, str(exc).encode("utf-8")[:MAX_PAYLOAD]))
                raise
            link.send(Frame(FrameType.CONFIRM, expected, digest))
            _linger(link, lim.linger, expected, digest)
            return bundle


def _linger(link: _Link, seconds: float, count: int, digest: bytes) -> None:
    """Repeat the confirmation if the sender asks again (its copy was lost); stop at FIN."""
    deadline = time.monotonic() + seconds
    while (frame := link.receive(deadline)) is not None:
        if frame.type is FrameType.FIN:
            return
        if frame.type is FrameType.DONE:
            link.send(Frame(FrameType.CONFIRM, count, digest))
