"""Frame encoding and the decoder's resynchronisation (pure, no I/O)."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeship.provisioning.frames import MAGIC, MAX_PAYLOAD, Frame, FrameDecoder, FrameType

FRAMES = [Frame(FrameType.DATA, i, bytes([i]) * (i * 13 % 200)) for i in range(30)]
WIRE = b"".join(f.encode() for f in FRAMES)


def test_frames_survive_any_slicing_of_the_stream() -> None:
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(WIRE), 5):
        out += decoder.feed(WIRE[i : i + 5])
    assert out == FRAMES and decoder.bad_frames == 0 and decoder.skipped == 0


def test_the_wire_layout_is_the_documented_one() -> None:
    wire = Frame(FrameType.ACK, 0x0102, b"hi").encode()
    fields = bytes([0x11, 0x01, 0x02, 0x00, 0x02])
    assert wire[:2] == MAGIC and wire[2:7] == fields
    assert wire[7:9] == struct.pack(">H", zlib.crc32(fields) & 0xFFFF)
    assert wire[9:11] == b"hi"
    assert wire[11:] == struct.pack(">I", zlib.crc32(wire[2:11]))


def test_garbage_before_and_between_frames_is_skipped() -> None:
    decoder = FrameDecoder()
    noise = b"\x00\xe5\xe5\x5a\xff" + MAGIC + b"\x10\x00"
    out = decoder.feed(noise + FRAMES[0].encode() + noise + FRAMES[1].encode())
    assert out == FRAMES[:2]
    assert decoder.skipped > 0


def test_a_corrupted_frame_is_dropped_and_the_next_one_found() -> None:
    damaged = bytearray(FRAMES[5].encode())
    damaged[12] ^= 0x40
    out = FrameDecoder().feed(bytes(damaged) + FRAMES[6].encode())
    assert out == [FRAMES[6]]


def test_a_damaged_length_does_not_swallow_the_following_frames() -> None:
    damaged = bytearray(FRAMES[5].encode())
    damaged[6] = 0xFF  # length low byte: the header check refuses it at once
    decoder = FrameDecoder()
    assert decoder.feed(bytes(damaged) + FRAMES[6].encode()) == [FRAMES[6]]


def test_a_dropped_byte_leaves_a_partial_frame_that_resync_gives_up() -> None:
    wire = FRAMES[5].encode()
    decoder = FrameDecoder()
    assert decoder.feed(wire[:20] + wire[21:]) == []
    assert decoder.pending > 0
    assert decoder.resync() == [] and decoder.pending == 0
    assert decoder.feed(FRAMES[6].encode()) == [FRAMES[6]]


def test_encoding_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="payload"):
        Frame(FrameType.DATA, 0, b"x" * (MAX_PAYLOAD + 1)).encode()
    with pytest.raises(ValueError, match="seq"):
        Frame(FrameType.DATA, 70000).encode()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rate=st.floats(0.0, 0.02))
def test_every_frame_the_noise_left_intact_is_decoded(seed: int, rate: float) -> None:
    """Flip/drop bytes at random: frames that came through whole are found, nothing false is."""
    rng = random.Random(seed)
    out = bytearray()
    intact: list[Frame] = []
    for frame in FRAMES:
        wire = bytearray(frame.encode())
        touched = False
        for i in range(len(wire)):
            if rng.random() < rate:
                wire[i] ^= 1 << rng.randrange(8)
                touched = True
        if rng.random() < rate * 10:
            del wire[rng.randrange(len(wire))]
            touched = True
        if not touched:
            intact.append(frame)
        out += wire
    decoder = FrameDecoder()
    found = decoder.feed(bytes(out)) + decoder.resync()
    assert all(f in FRAMES for f in found)
    for frame in intact:
        assert frame in found
