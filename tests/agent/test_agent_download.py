"""The blob downloader against a real HTTP server: resume with Range, digest check, cache hits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agent_world import BlobServer

from edgeship.agent.fetch.download import BlobCache, DigestMismatchError, DownloadError

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    blobs = BlobServer(tmp_path / "served")
    yield blobs
    blobs.close()


def test_a_blob_is_downloaded_checked_and_then_served_from_the_cache(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    path = cache.fetch(f"/blobs/{digest}", digest)
    assert path.read_bytes() == DATA
    assert path == cache.path_for(digest)
    assert cache.fetch(f"/blobs/{digest}", digest) == path
    assert len(server.requests) == 1  # the second fetch touched no network


def test_an_interrupted_download_resumes_with_a_range_request(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    server.cut_next = 1024 * 1024
    with pytest.raises(DownloadError, match="next try resumes"):
        cache.fetch(f"{server.url}/blobs/{digest}", digest)
    assert cache.partial_for(digest).stat().st_size == 1024 * 1024
    path = cache.fetch(f"{server.url}/blobs/{digest}", digest)
    assert path.read_bytes() == DATA
    assert server.requests[-1] == (f"/blobs/{digest}", f"bytes={1024 * 1024}-")
    assert not cache.partial_for(digest).exists()


def test_a_complete_partial_file_is_finished_without_a_body(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    cache.partial_for(digest).parent.mkdir(parents=True)
    cache.partial_for(digest).write_bytes(DATA)
    assert cache.fetch(f"/blobs/{digest}", digest).read_bytes() == DATA  # the server answered 416


def test_a_tampered_blob_is_refused_and_its_partial_removed(server: BlobServer, tmp_path: Path) -> None:
    digest = server.put(DATA)
    server.put_as(digest, DATA[:-1] + b"X")
    cache = BlobCache(tmp_path / "cache", server.url)
    with pytest.raises(DigestMismatchError, match="altered or corrupted"):
        cache.fetch(f"/blobs/{digest}", digest)
    assert not cache.partial_for(digest).exists()
    assert not cache.path_for(digest).exists()


def test_missing_blob_and_bad_locations_are_clear_errors(server: BlobServer, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", server.url)
    digest = "sha256:" + "0" * 64
    with pytest.raises(DownloadError, match="HTTP 404"):
        cache.fetch(f"/blobs/{digest}", digest)
    with pytest.raises(DownloadError, match="neither an http"):
        cache.fetch("ftp://x/y", digest)
    with pytest.raises(DownloadError, match="not a sha256"):
        cache.fetch("/blobs/x", "md5:abc")


def test_the_digest_hashed_while_downloading_is_reused_only_for_the_unchanged_file(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    cache = BlobCache(tmp_path / "cache", server.url)
    path = cache.fetch(f"/blobs/{digest}", digest)
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
    BlobCache(tmp_path / "cache", server.url).fetch(f"/blobs/{digest}", digest)
    restarted = BlobCache(tmp_path / "cache", server.url)  # an agent restart: nothing vouched for yet
    path = restarted.path_for(digest)
    assert restarted.checked_digest(path) is None
    assert restarted.digest_of(path) == (digest, len(DATA))
    assert restarted.checked_digest(path) == (digest, len(DATA))
