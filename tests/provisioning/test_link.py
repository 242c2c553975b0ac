"""The sender and receiver state machines over real pseudo-terminals, clean and noisy."""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pty_noise import NoisyPtyPair

from edgeship.errors import BundleError, NoAnswerError, ProvisioningError
from edgeship.provisioning import (
    MAX_BUNDLE,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameType,
    LinkLimits,
    receive_bundle,
    send_bundle,
)
from edgeship.provisioning.serial_port import SerialStream, open_serial

FAST = LinkLimits(ack_timeout=0.2, retries=12, confirm_timeout=2.0, idle_timeout=5.0, linger=2.0, chunk=128)


@pytest.fixture
def ends(ptys: NoisyPtyPair) -> Iterator[tuple[SerialStream, SerialStream]]:
    with open_serial(ptys.a_path) as sender, open_serial(ptys.b_path) as receiver:
        yield sender, receiver


class Receiver(threading.Thread):
    """``receive_bundle`` in a thread; ``result`` is the bundle or the exception it raised."""

    def __init__(self, stream: SerialStream, limits: LinkLimits = FAST, wait: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.stream, self.limits, self.wait = stream, limits, wait
        self.accepted: list[bytes] = []
        self.result: bytes | BaseException | None = None

    def run(self) -> None:
        try:
            self.result = receive_bundle(self.stream, self.accepted.append, wait=self.wait, limits=self.limits)
        except BaseException as exc:
            self.result = exc

    def finish(self) -> bytes | BaseException | None:
        self.join(15)
        assert not self.is_alive()
        return self.result


def _bundle(size: int) -> bytes:
    return bytes((i * 7 + i // 256) % 256 for i in range(size))


def test_clean_transfer_delivers_every_byte_and_confirms_the_digest(ends: tuple[SerialStream, SerialStream]) -> None:
    sender, receiver_end = ends
    receiver = Receiver(receiver_end)
    receiver.start()
    bundle = _bundle(5000)
    seen: list[int] = []
    report = send_bundle(sender, bundle, limits=FAST, progress=lambda done, total: seen.append(done))
    assert receiver.finish() == bundle
    assert receiver.accepted == [bundle]
    assert report.sha256 == hashlib.sha256(bundle).hexdigest()
    assert report.chunks == 40 and report.retransmits == 0
    assert seen[-1] == len(bundle)


def test_flipped_and_dropped_bytes_are_repaired_by_retransmission(
    ptys: NoisyPtyPair, ends: tuple[SerialStream, SerialStream]
) -> None:
    ptys.noise.flip = 0.002
    ptys.noise.drop = 0.002
    sender, receiver_end = ends
    receiver = Receiver(receiver_end)
    receiver.start()
    bundle = _bundle(8000)
    report = send_bundle(sender, bundle, limits=FAST)
    assert receiver.finish() == bundle
    assert receiver.accepted == [bundle]
    assert ptys.noise.flipped > 0 and ptys.noise.dropped > 0
    assert report.retransmits > 0, report


def test_a_silent_device_gives_a_clear_error_after_the_retries(ends: tuple[SerialStream, SerialStream]) -> None:
    sender, _ = ends
    limits = LinkLimits(ack_timeout=0.1, retries=3)
    started = time.monotonic()
    with pytest.raises(NoAnswerError) as caught:
        send_bundle(sender, b"{}", limits=limits)
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert sender.name in message and "after 3 tries" in message
    assert "check the cable and that 'edgeship agent provision' is running" in message


def test_a_bundle_over_the_limit_is_refused_before_a_byte_is_sent(
    ptys: NoisyPtyPair, ends: tuple[SerialStream, SerialStream]
) -> None:
    sender, _ = ends
    with pytest.raises(BundleError, match=f"over the limit of {MAX_BUNDLE}"):
        send_bundle(sender, b"x" * (MAX_BUNDLE + 1), limits=FAST)
    time.sleep(0.2)
    assert ptys.relayed == 0


def test_a_device_with_a_smaller_limit_refuses_before_data(ends: tuple[SerialStream, SerialStream]) -> None:
    sender, receiver_end = ends
    result: list[BaseException] = []

    def run() -> None:
        try:
            receive_bundle(receiver_end, lambda _: None, wait=10, limits=FAST, max_size=1000)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with pytest.raises(ProvisioningError, match="accepts at most 1000"):
        send_bundle(sender, _bundle(2000), limits=FAST)
    thread.join(10)
    assert isinstance(result[0], BundleError)


def _raw_exchange(stream: SerialStream, frame: Frame, timeout: float = 5.0) -> Frame:
    stream.write(frame.encode())
    decoder = FrameDecoder()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = decoder.feed(stream.read(4096, 0.1))
        if frames:
            return frames[0]
    raise AssertionError("no answer")


def test_the_receiver_refuses_another_protocol_version(ends: tuple[SerialStream, SerialStream]) -> None:
    sender, receiver_end = ends
    receiver = Receiver(receiver_end)
    receiver.start()
    hello = struct.pack(">BI32s", PROTOCOL_VERSION + 1, 10, bytes(32))
    answer = _raw_exchange(sender, Frame(FrameType.HELLO, 0, hello))
    assert answer.type is FrameType.ERROR
    text = answer.payload.decode()
    assert f"version {PROTOCOL_VERSION + 1}" in text and "install the same edgeship version" in text
    result = receiver.finish()
    assert isinstance(result, ProvisioningError) and "version" in str(result)
    assert receiver.accepted == []


def test_the_sender_refuses_a_device_speaking_another_version(ends: tuple[SerialStream, SerialStream]) -> None:
    sender, device = ends

    def fake_device() -> None:
        decoder = FrameDecoder()
        while True:
            for frame in decoder.feed(device.read(4096, 0.1)):
                if frame.type is FrameType.HELLO:
                    device.write(Frame(FrameType.HELLO_ACK, 0, struct.pack(">BI", 9, MAX_BUNDLE)).encode())
                    return

    thread = threading.Thread(target=fake_device, daemon=True)
    thread.start()
    with pytest.raises(ProvisioningError, match="speaks provisioning protocol version 9"):
        send_bundle(sender, b"{}", limits=FAST)
    thread.join(5)


def test_a_refusal_by_accept_reaches_the_operator_and_nothing_is_confirmed(
    ends: tuple[SerialStream, SerialStream],
) -> None:
    sender, receiver_end = ends

    def refuse(_: bytes) -> None:
        raise BundleError("The provisioning bundle is not JSON; send it again.")

    result: list[BaseException] = []
    thread = threading.Thread(
        target=lambda: _catch(lambda: receive_bundle(receiver_end, refuse, wait=10, limits=FAST), result), daemon=True
    )
    thread.start()
    with pytest.raises(ProvisioningError, match="stopped the transfer: The provisioning bundle is not JSON"):
        send_bundle(sender, b"not json", limits=FAST)
    thread.join(10)
    assert isinstance(result[0], BundleError)


def _catch(fn: Callable[[], object], into: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        into.append(exc)


def test_a_receiver_with_no_operator_times_out_clearly(ends: tuple[SerialStream, SerialStream]) -> None:
    _, receiver_end = ends
    with pytest.raises(NoAnswerError, match=r"No provisioning bundle arrived .* within 0\.5 s; run 'edgeship device"):
        receive_bundle(receiver_end, lambda _: None, wait=0.5, limits=FAST)


def test_an_operator_that_goes_silent_mid_transfer_fails_the_receiver(ends: tuple[SerialStream, SerialStream]) -> None:
    sender, receiver_end = ends
    limits = LinkLimits(ack_timeout=0.2, retries=3, idle_timeout=0.5, chunk=64)
    result: list[BaseException] = []
    accepted: list[bytes] = []
    thread = threading.Thread(
        target=lambda: _catch(lambda: receive_bundle(receiver_end, accepted.append, wait=10, limits=limits), result),
        daemon=True,
    )
    thread.start()
    bundle = _bundle(1000)
    digest = hashlib.sha256(bundle).digest()
    assert _raw_exchange(sender, Frame(FrameType.HELLO, 0, struct.pack(">BI32s", 1, 1000, digest))).type is (
        FrameType.HELLO_ACK
    )
    assert _raw_exchange(sender, Frame(FrameType.DATA, 0, bundle[:64])).type is FrameType.ACK
    thread.join(5)
    assert isinstance(result[0], ProvisioningError) and "went silent" in str(result[0])
    assert accepted == []
    assert os.path.exists(sender.name)


def test_an_operator_that_starts_over_mid_transfer_gets_a_fresh_session(
    ends: tuple[SerialStream, SerialStream],
) -> None:
    sender, receiver_end = ends
    receiver = Receiver(receiver_end)
    receiver.start()
    first = _bundle(1000)
    hello = struct.pack(">BI32s", PROTOCOL_VERSION, len(first), hashlib.sha256(first).digest())
    assert _raw_exchange(sender, Frame(FrameType.HELLO, 0, hello)).type is FrameType.HELLO_ACK
    assert _raw_exchange(sender, Frame(FrameType.DATA, 0, first[:128])).type is FrameType.ACK
    second = b"the second, complete bundle" * 40
    report = send_bundle(sender, second, limits=FAST)
    assert receiver.finish() == second
    assert receiver.accepted == [second]
    assert report.sha256 == hashlib.sha256(second).hexdigest()
