"""Download a blob into the agent's content-addressed cache: resume, check, rename.

::

    data_dir/blobs/sha256/<hex>        complete, checked blobs (never changed once there)
    data_dir/blobs/partial/<hex>.part  a download in progress; resumed with an HTTP Range request

Invariants: a file under ``sha256/`` always has the digest in its name (it is only
ever created by renaming a checked ``.part``); a blob already in the cache is never
fetched again; a ``.part`` whose bytes turn out wrong is deleted, so the next try
starts from zero. Locations are untrusted (the digest comes from a signed manifest):
an absolute ``http(s)://`` URL or a hub path (``/blobs/sha256:...``) joined to the
hub URL.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx

from edgeship.errors import TransportError

__all__ = ["BlobCache", "DigestMismatchError", "DownloadError"]

_CHUNK = 1024 * 1024  # bytes per read/write


class DownloadError(TransportError):
    """A blob could not be fetched (network, HTTP status); a retry may succeed."""


class DigestMismatchError(DownloadError):
    """The fetched bytes do not have the signed digest; the partial file was removed."""


def _hex(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise DownloadError(f"Digest {digest!r} is not a sha256:<64 hex> digest; the manifest is malformed.")
    return value


class BlobCache:
    """Blobs by digest under ``root``; ``fetch`` downloads what is missing."""

    def __init__(self, root: Path, hub_url: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.root = Path(root)
        self.hub_url = hub_url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=True)

    def path_for(self, digest: str) -> Path:
        return self.root / "sha256" / _hex(digest)

    def partial_for(self, digest: str) -> Path:
        return self.root / "partial" / f"{_hex(digest)}.part"

    def resolve(self, location: str) -> str:
        if location.startswith(("http://", "https://")):
            return location
        if location.startswith("/"):
            return self.hub_url + location
        raise DownloadError(f"Blob location {location!r} is neither an http(s) URL nor a hub path ('/blobs/...').")

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def fetch(self, location: str, digest: str) -> Path:
        """The cached blob ``digest``, downloading (or resuming) it from ``location`` if missing."""
        final = self.path_for(digest)
        if final.is_file():
            return final
        part = self.partial_for(digest)
        part.parent.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        url = self.resolve(location)
        sha = hashlib.sha256()
        have = part.stat().st_size if part.is_file() else 0
        if have:
            with part.open("rb") as existing:
                for chunk in iter(lambda: existing.read(_CHUNK), b""):
                    sha.update(chunk)
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and have:
                    pass  # the part is already whole (or longer than the blob): the digest decides below
                elif response.status_code == 206 and have:
                    self._append(response, part, sha, "ab")
                elif response.status_code == 200:
                    sha = hashlib.sha256()
                    self._append(response, part, sha, "wb")
                else:
                    raise DownloadError(
                        f"Downloading {url} answered HTTP {response.status_code}; check the hub and the blob location."
                    )
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"Downloading {url} failed ({exc}); the {part.stat().st_size if part.exists() else 0} bytes "
                "received are kept and the next try resumes."
            ) from exc
        got = "sha256:" + sha.hexdigest()
        if got != digest:
            part.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"Blob from {url} has digest {got[:19]}…, not the signed {digest[:19]}…; "
                "it was altered or corrupted (the partial download was removed; the hub must serve the right blob)."
            )
        os.replace(part, final)
        return final

    @staticmethod
    def _append(response: httpx.Response, part: Path, sha: hashlib._Hash, mode: str) -> None:
        with part.open(mode) as out:
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                sha.update(chunk)
            out.flush()
            os.fsync(out.fileno())

    def close(self) -> None:
        self._client.close()
