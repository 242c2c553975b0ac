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
