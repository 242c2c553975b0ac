"""The free-space decision before an update: pure, so every case is one line of numbers."""

from __future__ import annotations

import pytest

from edgeship.agent.fetch.space import NotEnoughSpaceError, check_space, human_bytes

MiB = 2**20


def test_an_update_that_leaves_the_margin_free_goes_ahead() -> None:
    # 20 + 40 + 256 = 316: exactly fits
    check_space("digits.a", download=20 * MiB, unpack=40 * MiB, free=316 * MiB, margin=256 * MiB, where="/data")


def test_an_update_that_would_eat_into_the_margin_is_refused_with_the_numbers() -> None:
    with pytest.raises(NotEnoughSpaceError) as info:
        check_space("digits.a", download=20 * MiB, unpack=40 * MiB, free=300 * MiB, margin=256 * MiB, where="/data")
    message = str(info.value)
    assert "digits.a: it needs 60.0 MiB (20.0 MiB to download, 40.0 MiB to unpack)" in message
    assert "256.0 MiB must stay free (min_free_bytes)" in message and "only 300.0 MiB are free on /data" in message
    assert "Nothing was downloaded" in message


def test_what_is_already_cached_needs_no_room_but_the_install_still_does() -> None:
    with pytest.raises(NotEnoughSpaceError, match="0 bytes to download"):
        check_space("digits.a", download=0, unpack=40 * MiB, free=100 * MiB, margin=64 * MiB, where="/data")


def test_sizes_read_as_people_write_them() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * MiB, 3 * 2**40)] == [
        "0 bytes", "1023 bytes", "1.5 KiB", "5.0 MiB", "3.0 TiB"
    ]
