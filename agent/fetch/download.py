"""Download a blob into the agent's content-addressed cache: resume, check, rename.

::

    data_dir/blobs/sha256/<hex>        complete, checked blobs (never changed once there)
    data_dir/blobs/partial/<hex>.part  a download in progress; resumed with an HTTP Range request

Invariants: a file under ``sha256/`` always has the digest in its name (it is only
ever created by renaming a checked ``.part``); a blob already in the cache is never
fetched again; :meth:`BlobCache.checked_digest` answers only for a file whose bytes
this process hashed (while downloading it, or in :meth:`BlobCache.digest_of`) and
whose inode, size and mtime have not changed since; a ``.part`` whose bytes turn out wrong is deleted, so the next try
starts from zero. Locations are untrusted (the digest comes from a signed manifest):
an absolute ``http(s)://`` URL or a hub path (``/blobs/sha256:...``) joined to the
hub URL.

HTTP is the standard library's (``urllib.request``): importing httpx would pull its
command-line extras (rich, click, pygments) into the agent's memory, for one GET.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, NamedTuple

from edgeship.errors import TransportError
from edgeship.modules.verify import file_digest

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


class _FileId(NamedTuple):
    """What identifies a file's bytes without reading them: a write changes size or mtime."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> _FileId:
        st = path.stat()
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class BlobCache:
    """Blobs by digest under ``root``; ``fetch`` downloads what is missing."""

    def __init__(self, root: Path, hub_url: str, *, timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.hub_url = hub_url.rstrip("/")
        self.timeout = timeout  # seconds without a byte before a download is abandoned (and later resumed)
        self._hashed: dict[tuple[int, int], tuple[_FileId, str]] = {}  # (device, inode) -> (file id, digest)

    def checked_digest(self, path: Path) -> tuple[str, int] | None:
        """``(digest, size)`` of ``path`` if this process hashed that very file (a hard link counts)
        and it has not been written since (same size and mtime); else None."""
        try:
            now = _FileId.of(path)
        except OSError:
            return None
        known = self._hashed.get((now.device, now.inode))
        if known is None or known[0] != now:
            return None
        return known[1], now.size

    def digest_of(self, path: Path) -> tuple[str, int]:
        """``(sha256:<hex>, size)`` of ``path``: from :meth:`checked_digest`, else read (and remembered)."""
        known = self.checked_digest(path)
        if known is not None:
            return known
        before = _FileId.of(path)
        digest, size = file_digest(path)
        if _FileId.of(path) == before and size == before.size:  # not written while it was read
            self._remember(path, digest)
        return digest, size

    def _remember(self, path: Path, digest: str) -> None:
        ident = _FileId.of(path)
        self._hashed[(ident.device, ident.inode)] = (ident, digest)

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
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})  # noqa: S310
        try:
            with self._open(request, have) as response:
                status = response.status
                if status == 206 and have:
                    self._append(response, part, sha, "ab")
                elif status == 200:
                    sha = hashlib.sha256()
                    self._append(response, part, sha, "wb")
                elif status != 416:
                    raise DownloadError(f"Downloading {url} answered HTTP {status}; check the hub and the blob.")
        except (OSError, http.client.HTTPException) as exc:
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
        self._remember(final, digest)  # hashed just now, as it arrived: verify need not read it again
        return final

    def _open(self, request: urllib.request.Request, have: int) -> Any:
        """The response; an empty 416 on a resume means the part is whole already (the digest decides)."""
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310  # resolve() allows http(s) only
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and have:
                return _Empty()
            raise DownloadError(
                f"Downloading {request.full_url} answered HTTP {exc.code}; check the hub and the blob location."
            ) from exc

    @staticmethod
    def _append(response: IO[bytes], part: Path, sha: Any, mode: str) -> None:
        with part.open(mode) as out:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                sha.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        remaining = getattr(response, "length", None)  # http.client: bytes announced but not received
        if remaining:
            raise http.client.IncompleteRead(b"", remaining)

    def close(self) -> None:
        """Nothing to release (one connection per download); kept for symmetry with other clients."""


class _Empty:
    """Stands in for a 416 answer: no body, and a context manager like a response."""

    status = 416

    def __enter__(self) -> _Empty:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None
