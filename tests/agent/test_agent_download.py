"""The blob downloader against a real HTTP server: resume with Range, digest check, cache hits, and bounds.

The bounds (ADR 0018) are tested one fault per test against a real server that
misbehaves (``BlobServer.misbehave``): endless data, a size announced too large, a
trickle, silence, and hosts that ignore, refuse or botch Range requests.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from agent_world import BlobServer

from edgeship.agent.fetch.bounded import Cancel, FetchLimits, ResumeRefusedError, open_range
from edgeship.agent.fetch.download import (
    BlobCache,
    CancelledError,
    DigestMismatchError,
    DownloadError,
    HostUnreachableError,
    SizeExceededError,
    SizeMismatchError,
    TooSlowError,
)

DATA = os.urandom(3 * 1024 * 1024 + 17)
SMALL = os.urandom(20 * 1024)  # the 20 KB bundle of the issue
MiB = 1024 * 1024


def _bytes_under(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    blobs = BlobServer(tmp_path / "served")
    yield blobs
    blobs.close()


def test_a_blob_is_downloaded_checked_and_then_served_from_the_cache(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    path = cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    assert path.read_bytes() == DATA
    assert path == cache.path_for(digest)
    assert cache.fetch(f"/blobs/{digest}", digest, len(DATA)) == path
    assert len(server.requests) == 1  # the second fetch touched no network


def test_an_interrupted_download_resumes_with_a_range_request(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    server.cut_next = 1024 * 1024
    with pytest.raises(DownloadError, match="next try resumes"):
        cache.fetch(f"{server.url}/blobs/{digest}", digest, len(DATA))
    assert cache.partial_for(digest).stat().st_size == 1024 * 1024
    path = cache.fetch(f"{server.url}/blobs/{digest}", digest, len(DATA))
    assert path.read_bytes() == DATA
    assert server.requests[-1] == (f"/blobs/{digest}", f"bytes={1024 * 1024}-")
    assert not cache.partial_for(digest).exists()


def test_a_complete_partial_file_is_finished_without_a_request(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    cache.partial_for(digest).parent.mkdir(parents=True)
    cache.partial_for(digest).write_bytes(DATA)
    assert cache.fetch(f"/blobs/{digest}", digest, len(DATA)).read_bytes() == DATA
    assert server.requests == []  # the signed size says it is whole: the digest decides


def test_a_tampered_blob_is_refused_and_its_partial_removed(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    server.put_as(digest, DATA[:-1] + b"X")
    cache = BlobCache(tmp_path / "cache", server.url)
    with pytest.raises(DigestMismatchError, match="altered or corrupted"):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    assert not cache.partial_for(digest).exists()
    assert not cache.path_for(digest).exists()


def test_missing_blob_and_bad_locations_are_clear_errors(server: BlobServer, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", server.url)
    digest = "sha256:" + "0" * 64
    with pytest.raises(DownloadError, match="HTTP 404"):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    with pytest.raises(DownloadError, match="neither an http"):
        cache.fetch("ftp://x/y", digest, 10)
    with pytest.raises(DownloadError, match="not a sha256"):
        cache.fetch("/blobs/x", "md5:abc", 10)


def test_a_host_that_is_down_is_unreachable_not_wrong(server: BlobServer, tmp_path: Path) -> None:
    """Refused, cut short or 503: the agent waits and retries (ADR 0042); a 404 is the host being wrong."""
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    server.cut_next = MiB
    with pytest.raises(HostUnreachableError, match=f"closed the connection after {MiB} of"):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    server.misbehave(digest, "unavailable")
    with pytest.raises(HostUnreachableError, match="HTTP 503"):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    server.misbehave(digest, None)
    down = BlobCache(tmp_path / "cache", server.url)
    server.close()
    with pytest.raises(HostUnreachableError, match="Connection refused"):
        down.fetch(f"/blobs/{digest}", digest, len(DATA))
    assert (tmp_path / "cache").exists() and _bytes_under(tmp_path / "cache") == MiB  # kept for the resume
    empty = BlobServer(tmp_path / "empty")
    try:
        with pytest.raises(DownloadError, match="HTTP 404") as wrong:
            BlobCache(tmp_path / "other", empty.url).fetch(f"/blobs/{digest}", digest, 1)
    finally:
        empty.close()
    assert not isinstance(wrong.value, HostUnreachableError)


def test_the_digest_hashed_while_downloading_is_reused_only_for_the_unchanged_file(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    path = cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    link = tmp_path / "module" / "bundle.tar"
    link.parent.mkdir()
    os.link(path, link)  # as the executor lays out a module folder
    assert cache.checked_digest(link) == (digest, len(DATA))
    assert cache.checked_digest(tmp_path / "missing") is None

    stat = path.stat()
    with path.open("r+b") as handle:  # tampered in place after the download: same size, new bytes
        handle.write(b"X")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.checked_digest(link) is None
    tampered, size = cache.digest_of(link)  # read again, so the signed digest no longer matches
    assert tampered != digest and size == len(DATA)


def test_a_blob_cached_before_this_process_started_is_hashed_once(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    BlobCache(tmp_path / "cache", server.url).fetch(f"/blobs/{digest}", digest, len(DATA))
    restarted = BlobCache(tmp_path / "cache", server.url)  # an agent restart: nothing vouched for yet
    path = restarted.path_for(digest)
    assert restarted.checked_digest(path) is None
    assert restarted.digest_of(path) == (digest, len(DATA))
    assert restarted.checked_digest(path) == (digest, len(DATA))


# -- bounds: endless data ------------------------------------------------------------------------


def test_a_host_sending_endless_data_is_cut_off_at_the_signed_size_and_the_partial_deleted(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(SMALL)
    server.misbehave(digest, "endless")
    cache = BlobCache(tmp_path / "cache", server.url)
    for _ in range(3):  # every retry is bounded the same way: nothing accumulates
        with pytest.raises(SizeExceededError, match=f"sent more than the {len(SMALL)} bytes expected"):
            cache.fetch(f"/blobs/{digest}", digest, len(SMALL))
        assert _bytes_under(cache.root) == 0
    server.wait(lambda: len(server.hangups) == 3)  # the agent hung up each time instead of reading on
    assert not cache.has(digest)


def test_a_host_announcing_more_than_the_signed_size_is_refused_before_reading(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(SMALL)
    server.misbehave(digest, "announce")
    cache = BlobCache(tmp_path / "cache", server.url)
    with pytest.raises(SizeExceededError, match=rf"announced {len(SMALL) * 1000} bytes .* refused before reading"):
        cache.fetch(f"/blobs/{digest}", digest, len(SMALL))
    assert _bytes_under(cache.root) == 0


def test_a_host_announcing_fewer_bytes_than_the_signed_size_serves_another_blob_and_the_partial_goes(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.put_as(digest, b"not the signed bundle")  # a mirror serving another (short) file under the name
    cache = BlobCache(tmp_path / "cache", server.url)
    _partial(cache, digest, DATA[:10])
    with pytest.raises(SizeMismatchError, match=r"announced 11 bytes but .* altered or corrupted"):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))  # resumed at 10: 206 for the 11 bytes left
    assert not cache.partial_for(digest).exists()


def test_a_partial_larger_than_the_signed_size_is_deleted_and_the_blob_fetched_whole(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    cache.partial_for(digest).parent.mkdir(parents=True)
    cache.partial_for(digest).write_bytes(DATA + b"left over by an older, unbounded agent")
    assert cache.fetch(f"/blobs/{digest}", digest, len(DATA)).read_bytes() == DATA
    assert server.requests == [(f"/blobs/{digest}", None)]  # from byte 0: the partial could not be resumed


# -- bounds: hosts that cannot resume ------------------------------------------------------------


def _partial(cache: BlobCache, digest: str, data: bytes) -> None:
    cache.partial_for(digest).parent.mkdir(parents=True, exist_ok=True)
    cache.partial_for(digest).write_bytes(data)


def test_a_host_that_ignores_range_requests_is_downloaded_again_from_byte_zero(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.misbehave(digest, "ignore_range")
    cache = BlobCache(tmp_path / "cache", server.url)
    _partial(cache, digest, DATA[:MiB])
    assert cache.fetch(f"/blobs/{digest}", digest, len(DATA)).read_bytes() == DATA
    assert server.requests == [(f"/blobs/{digest}", f"bytes={MiB}-")]  # answered 200: the partial was replaced


def test_a_host_that_refuses_to_resume_has_the_partial_deleted_and_the_blob_fetched_from_zero(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.misbehave(digest, "refuse_range")
    cache = BlobCache(tmp_path / "cache", server.url)
    _partial(cache, digest, DATA[:MiB])
    assert cache.fetch(f"/blobs/{digest}", digest, len(DATA)).read_bytes() == DATA
    assert server.requests == [(f"/blobs/{digest}", f"bytes={MiB}-"), (f"/blobs/{digest}", None)]  # 416, then 200


def test_a_host_that_resumes_at_the_wrong_byte_is_refused_and_the_partial_deleted(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.misbehave(digest, "wrong_range")
    cache = BlobCache(tmp_path / "cache", server.url)
    _partial(cache, digest, DATA[:MiB])
    with pytest.raises(ResumeRefusedError, match=r"does not resume correctly.*partial download was deleted"):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    assert not cache.partial_for(digest).exists()


# -- bounds: slow retrieval ----------------------------------------------------------------------


def test_a_trickling_host_is_abandoned_below_the_minimum_rate_and_its_bytes_are_kept_for_a_resume(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(SMALL)
    server.misbehave(digest, "trickle")  # one byte every 0.2 s
    cache = BlobCache(tmp_path / "cache", server.url, limits=FetchLimits(min_rate=100, window=1, deadline=300))
    with pytest.raises(TooSlowError, match=r"below the minimum 100 bytes/s .* next try resumes"):
        cache.fetch(f"/blobs/{digest}", digest, len(SMALL))
    kept = cache.partial_for(digest).stat().st_size
    assert 0 < kept < len(SMALL)
    server.misbehave(digest, None)  # the host recovers
    assert cache.fetch(f"/blobs/{digest}", digest, len(SMALL)).read_bytes() == SMALL
    assert server.requests[-1] == (f"/blobs/{digest}", f"bytes={kept}-")


def test_a_silent_host_is_abandoned_after_one_window(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(SMALL)
    server.misbehave(digest, "silent")
    cache = BlobCache(tmp_path / "cache", server.url, limits=FetchLimits(min_rate=100, window=0.5, deadline=300))
    with pytest.raises(TooSlowError, match=r"sent nothing for 0\.5 s"):
        cache.fetch(f"/blobs/{digest}", digest, len(SMALL))


def test_a_transfer_that_keeps_the_rate_but_passes_its_deadline_is_abandoned(server: BlobServer) -> None:
    digest = server.put(DATA)
    ticks = iter(range(0, 10**9, 1000))  # every look at the clock is 1000 s later than the one before

    limits = FetchLimits(min_rate=10**9, window=10**9, deadline=10)  # the rate window never closes
    received = bytearray()
    url = f"{server.url}/blobs/{digest}"
    with (
        open_range(url, 0, limits=limits, cancel=Cancel(), clock=lambda: float(next(ticks))) as body,
        pytest.raises(TooSlowError, match="did not finish within 10 s"),
    ):
        body.copy(received.extend, len(DATA))
    assert 0 < len(received) < len(DATA)


# -- cancellation --------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # a read the cancellation failed to wake would block for the 600 s window
def test_a_cancelled_download_wakes_from_a_blocked_read_and_keeps_its_partial(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.misbehave(digest, "silent")  # headers, then nothing: the read blocks
    cache = BlobCache(tmp_path / "cache", server.url, limits=FetchLimits(min_rate=1, window=600, deadline=600))
    _partial(cache, digest, DATA[:MiB])
    cancel = Cancel()

    def newer_work_arrives() -> None:
        server.wait(lambda: bool(server.requests))
        cancel.cancel("a newer desired message arrived")

    thread = threading.Thread(target=newer_work_arrives)
    thread.start()
    kept = r"^a newer desired message arrived; the bytes received are kept for a resume$"
    with pytest.raises(CancelledError, match=kept):
        cache.fetch(f"/blobs/{digest}", digest, len(DATA), cancel=cancel)
    thread.join()
    assert cache.partial_for(digest).read_bytes() == DATA[:MiB]
    server.wait(lambda: bool(server.hangups))  # the agent closed the connection
    assert server.requests == [(f"/blobs/{digest}", f"bytes={MiB}-")]


def test_a_cancelled_token_stops_the_next_download_before_it_connects(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(SMALL)
    cancel = Cancel()
    cancel.cancel("the agent is stopping")
    with pytest.raises(CancelledError, match="the agent is stopping"):
        BlobCache(tmp_path / "cache", server.url).fetch(f"/blobs/{digest}", digest, len(SMALL), cancel=cancel)
    assert server.requests == []
    cancel.reset()  # re-armed: downloads run again
    BlobCache(tmp_path / "cache", server.url).fetch(f"/blobs/{digest}", digest, len(SMALL), cancel=cancel)


# -- the partial store ---------------------------------------------------------------------------


def test_the_partial_store_keeps_the_newest_partials_under_its_cap(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url, max_partial_bytes=5 * MiB)
    others = ["sha256:" + c * 64 for c in "abc"]  # three interrupted downloads of 1 MiB, oldest first
    for age, other in enumerate(others):
        _partial(cache, other, os.urandom(MiB))
        os.utime(cache.partial_for(other), ns=(age * 10**9, age * 10**9))
    cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    assert [cache.partial_for(o).exists() for o in others] == [False, False, True]  # 1 MiB + 3 MiB fit in 5 MiB


def test_missing_bytes_counts_what_the_cache_and_a_usable_partial_already_hold(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(SMALL)
    cache = BlobCache(tmp_path / "cache", server.url)
    assert cache.missing_bytes(digest, len(SMALL)) == len(SMALL)
    _partial(cache, digest, SMALL[:1000])
    assert cache.missing_bytes(digest, len(SMALL)) == len(SMALL) - 1000
    _partial(cache, digest, SMALL + b"too long")  # will be deleted: all of it is missing
    assert cache.missing_bytes(digest, len(SMALL)) == len(SMALL)
    cache.fetch(f"/blobs/{digest}", digest, len(SMALL))
    assert cache.missing_bytes(digest, len(SMALL)) == 0
