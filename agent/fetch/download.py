"""Download a blob into the agent's content-addressed cache: bounded, resumed, checked, renamed.

::

    data_dir/blobs/sha256/<hex>        complete, checked blobs (never changed once there)
    data_dir/blobs/partial/<hex>.part  a download in progress; resumed with an HTTP Range request

Invariants: a file under ``sha256/`` always has the digest in its name (it is only
ever created by renaming a checked ``.part``); a blob already in the cache is never
fetched again; :meth:`BlobCache.checked_digest` answers only for a file whose bytes
this process hashed (while downloading it, or in :meth:`BlobCache.digest_of`) and
whose inode, size and mtime have not changed since.

Bounds (ADR 0018): a ``.part`` never grows past the blob's signed size (the transfer is
cut off at one byte more, :mod:`edgeship.agent.fetch.bounded`); a ``.part`` that cannot
be resumed (wrong bytes, larger than the signed size, a host that answers a Range
request with another range or refuses it) is deleted, so the next try starts from zero;
all partials but the one in progress take at most ``max_partial_bytes`` (the oldest
are deleted first). Locations are untrusted (the digest and size come from a signed
manifest): an absolute ``http(s)://`` URL or a hub path (``/blobs/sha256:...``) joined
to the hub URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from edgeship.agent.fetch.bounded import (
    Cancel,
    CancelledError,
    DownloadError,
    FetchLimits,
    HostUnreachableError,
    ResumeRefusedError,
    SizeExceededError,
    SizeMismatchError,
    TooSlowError,
)
from edgeship.modules.verify import file_digest

__all__ = [
    "DEFAULT_MAX_PARTIAL_BYTES",
    "BlobCache",
    "CancelledError",
    "DigestMismatchError",
    "DownloadError",
    "HostUnreachableError",
    "SizeExceededError",
    "SizeMismatchError",
    "TooSlowError",
]

log = logging.getLogger("edgeship.agent")
DEFAULT_MAX_PARTIAL_BYTES = 1 << 30  # bytes: 1 GiB of interrupted downloads kept for resuming


class DigestMismatchError(DownloadError):
    """The fetched bytes do not have the signed digest; the partial file was removed."""


def _hex(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise DownloadError(f"Digest {digest!r} is not a sha256:<64 hex> digest; the manifest is malformed.")
    return value


class _Sha256(NamedTuple):
    """The digest a worker computed, with the one method :meth:`BlobCache.fetch` reads."""

    hex: str

    def hexdigest(self) -> str:
        return self.hex


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

    def __init__(
        self,
        root: Path,
        hub_url: str,
        *,
        limits: FetchLimits | None = None,
        max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES,
    ) -> None:
        self.root = Path(root)
        self.hub_url = hub_url.rstrip("/")
        self.limits = limits or FetchLimits()
        self.max_partial_bytes = max_partial_bytes  # bytes all partials but the current one may take together
        self._hashed: dict[tuple[int, int], tuple[_FileId, str]] = {}  # (device, inode) -> (file id, digest)
        self.received = 0  # bytes of blob bodies received from hosts by this cache (benchmarks/agent/parts.py)

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

    def missing_bytes(self, digest: str, size: int) -> int:
        """Bytes still to download for ``digest`` of signed ``size``: none when cached, less a usable partial."""
        if self.has(digest):
            return 0
        try:
            have = self.partial_for(digest).stat().st_size
        except OSError:
            have = 0
        return size - have if have <= size else size

    def fetch(
        self,
        location: str,
        digest: str,
        size: int,
        *,
        cancel: Cancel | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """The cached blob ``digest`` of the signed ``size``, downloading (or resuming) it from ``location``.

        Never writes past ``size``: a host that sends more is cut off at ``size + 1`` bytes
        (:class:`SizeExceededError`, the partial deleted); one that announces fewer bytes
        serves another blob (:class:`SizeMismatchError`, the partial deleted). A partial
        larger than ``size``, or one the host will not resume, is deleted; one cut short by
        the network, the limits (:class:`TooSlowError`) or ``cancel``
        (:class:`CancelledError`) is kept for a resume. ``progress`` is called with the
        bytes in the partial after each write (the agent's ``download`` fault point).
        """
        if size < 0:
            raise DownloadError(f"Blob {digest[:19]}… has a negative signed size {size}; the manifest is malformed.")
        final = self.path_for(digest)
        if final.is_file():
            return final
        part = self.partial_for(digest)
        part.parent.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        url = self.resolve(location)
        if part.is_file() and part.stat().st_size > size:
            log.info("partial %s is larger than the signed size %d; deleted", part.name, size)
            part.unlink(missing_ok=True)
        self._make_room(part, size)
        for _ in range(2):  # a second pass only when the host refused to resume: from byte 0
            sha = self._transfer(url, part, size, cancel or Cancel(), progress)
            if sha is not None:
                break
        else:
            raise DownloadError(f"{url} refused to resume twice; the next try starts over.")
        return self._finish(url, part, final, digest, "sha256:" + sha.hexdigest())

    def _transfer(
        self, url: str, part: Path, size: int, cancel: Cancel, progress: Callable[[int], None] | None = None
    ) -> Any:
        """Bring ``part`` to ``size`` bytes and return its sha256; None when the host would not resume
        (the partial was deleted: start over)."""
        have = part.stat().st_size if part.is_file() else 0
        if have == size:  # whole already (a complete partial, or an empty blob): the digest decides
            sha = hashlib.sha256()
            with part.open("rb") as existing:
                for chunk in iter(lambda: existing.read(1 << 20), b""):
                    sha.update(chunk)
            return sha
        from edgeship.agent.offload import run_job  # in a worker: the agent imports no urllib (ADR 0046)

        def landed(line: dict[str, Any]) -> None:
            self.received += int(line["got"])
            if progress is not None:
                progress(int(line["wrote"]))

        job = {"kind": "fetch", "url": url, "part": str(part), "size": size,
               "limits": {"min_rate": self.limits.min_rate, "window": self.limits.window,
                          "deadline": self.limits.deadline}}  # fmt: skip
        try:
            done = run_job(job, on_line=landed, cancel=cancel, fallback=HostUnreachableError)
            if done["status"] == 416:
                log.info("%s will not resume %s at byte %d; starting over", url, part.name, done["start"])
                part.unlink(missing_ok=True)
                return None
        except (SizeExceededError, SizeMismatchError, ResumeRefusedError) as exc:
            part.unlink(missing_ok=True)
            raise type(exc)(f"{exc} The partial download was deleted.") from exc
        except OSError as exc:  # writing the partial (reading the network is wrapped by Body.copy)
            raise DownloadError(
                f"Writing {part} failed ({exc}); free space on the agent's data disk. The bytes written are kept."
            ) from exc
        if done["start"] + done["got"] < size:
            raise HostUnreachableError(
                f"{url} closed the connection after {done['start'] + done['got']} of {size} bytes; "
                "they are kept and the next try resumes."
            )
        return _Sha256(str(done["sha256"]))

    def _finish(self, url: str, part: Path, final: Path, digest: str, got: str) -> Path:
        if got != digest:
            part.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"Blob from {url} has digest {got[:19]}…, not the signed {digest[:19]}…; "
                "it was altered or corrupted (the partial download was removed; the hub must serve the right blob)."
            )
        os.replace(part, final)
        self._remember(final, digest)  # hashed just now, as it arrived: verify need not read it again
        return final

    def _make_room(self, part: Path, size: int) -> None:
        """Delete the oldest other partials until they and this download fit in :attr:`max_partial_bytes`.

        So the partials on disk never take more than ``max(max_partial_bytes, size)``: the
        download in progress is bounded by its signed size, the others by the cap.
        """
        others = []
        for path in part.parent.glob("*.part"):
            if path != part:
                with contextlib.suppress(OSError):
                    st = path.stat()
                    others.append((st.st_mtime_ns, st.st_size, path))
        total = sum(used for _, used, _ in others) + size
        for _, used, path in sorted(others):
            if total <= self.max_partial_bytes:
                break
            path.unlink(missing_ok=True)
            total -= used
            log.info(
                "partial %s deleted to keep partial downloads under %d bytes (max_partial_bytes)",
                path.name,
                self.max_partial_bytes,
            )

    def close(self) -> None:
        """Nothing to release (one connection per download); kept for symmetry with other clients."""
