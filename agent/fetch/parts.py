"""The agent's part cache: a schemaVersion 2 module's parts by digest, fetched only when missing (ADR 0028).

::

    data_dir/parts/sha256/<hex>        complete, checked parts (never changed once there)
    data_dir/parts/partial/<hex>.part  a part being downloaded; resumed with a Range request

A part is a blob: the cache is a :class:`~edgeship.agent.fetch.download.BlobCache` of its
own, with the same guarantees (bounded by the signed size, resumed, digest-checked,
renamed into place, so a kill at any point leaves whole parts and resumable partials).
This adds what a cache of many small shared pieces needs:

- **where**: a part lives beside the module's bundle: the bundle's location in the
  deployment document with its last path segment replaced by the part's digest
  (``/blobs/sha256:<bundle>`` -> ``/blobs/sha256:<part>``), so the document is unchanged;
- **bound**: the parts on disk take at most ``max_bytes``; before a download,
  :meth:`PartCache.make_room` deletes parts no module needs (oldest first) and refuses
  the update when the parts it needs cannot fit;
- **collection**: :meth:`PartCache.collect` deletes every part that no installed module
  and no module of the accepted document names. A part some module needs is never
  deleted, whatever the bound.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from edgeship.agent.fetch.bounded import Cancel, DownloadError
from edgeship.agent.fetch.download import BlobCache
from edgeship.modules.plain import Part

__all__ = ["DEFAULT_MAX_PART_BYTES", "PartCache", "PartCacheFullError", "part_location"]

log = logging.getLogger("edgeship.agent")
DEFAULT_MAX_PART_BYTES = 4 << 30  # bytes: 4 GiB of parts kept for reuse (wheels, model chunks, layers)


class PartCacheFullError(DownloadError):
    """The parts a module needs do not fit in the part cache's bound, even with every unneeded part deleted."""


def part_location(bundle_location: str, digest: str) -> str:
    """Where part ``digest`` is served: beside the bundle, its digest in place of the bundle's."""
    base, slash, _last = bundle_location.rpartition("/")
    if not slash:
        raise DownloadError(f"Bundle location {bundle_location!r} has no path; parts cannot be found beside it.")
    return f"{base}/{digest}"


class PartCache:
    """Parts by digest under ``blobs.root``; ``fetch`` downloads the missing ones."""

    def __init__(self, blobs: BlobCache, *, max_bytes: int = DEFAULT_MAX_PART_BYTES) -> None:
        self.blobs = blobs
        self.max_bytes = max_bytes  # bytes all complete parts may take together

    @property
    def root(self) -> Path:
        return self.blobs.root

    def path_for(self, digest: str) -> Path:
        return self.blobs.path_for(digest)

    def has(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def missing_bytes(self, parts: Iterable[Part]) -> int:
        """Bytes still to download for ``parts`` (less what is cached or partly downloaded)."""
        unique = {p.digest: p for p in parts}
        return sum(self.blobs.missing_bytes(p.digest, p.size) for p in unique.values())

    def cached(self) -> dict[str, tuple[int, int]]:
        """``sha256:<hex>`` -> (bytes, mtime in ns) of every complete part."""
        found: dict[str, tuple[int, int]] = {}
        folder = self.root / "sha256"
        if folder.is_dir():
            for path in folder.iterdir():
                with contextlib.suppress(OSError):
                    st = path.stat()
                    found["sha256:" + path.name] = (st.st_size, st.st_mtime_ns)
        return found

    def collect(self, keep: set[str]) -> int:
        """Delete every complete part not in ``keep`` (digests some module needs); returns bytes freed."""
        freed = 0
        for digest, (size, _mtime) in self.cached().items():
            if digest not in keep:
                self.path_for(digest).unlink(missing_ok=True)
                freed += size
        if freed:
            log.info("part cache: %d bytes of parts no module needs deleted", freed)
        return freed

    def make_room(self, wanted: Iterable[Part], keep: set[str]) -> None:
        """Before fetching ``wanted``: delete unneeded parts, oldest first, until everything fits in ``max_bytes``.

        ``keep`` are the digests other modules need; ``wanted``'s own are kept too. Raises
        :class:`PartCacheFullError` when the needed parts alone exceed the bound.
        """
        wanted = list(wanted)
        needed = keep | {p.digest for p in wanted}
        cached = self.cached()
        total = sum(size for size, _ in cached.values()) + self.missing_bytes(wanted)
        for digest, (size, _mtime) in sorted(cached.items(), key=lambda item: item[1][1]):
            if total <= self.max_bytes:
                return
            if digest not in needed:
                self.path_for(digest).unlink(missing_ok=True)
                total -= size
        if total > self.max_bytes:
            raise PartCacheFullError(
                f"The module's parts need {total} bytes in the part cache, more than its {self.max_bytes} bytes "
                "(part_cache_bytes in agent.toml); raise the bound or deploy fewer modules to this device."
            )

    def fetch(
        self,
        bundle_location: str,
        parts: Iterable[Part],
        *,
        cancel: Cancel | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Path]:
        """Each part's cached file, downloading the missing ones from beside ``bundle_location``."""
        paths = []
        for part in {p.digest: p for p in parts}.values():
            location = part_location(bundle_location, part.digest)
            paths.append(self.blobs.fetch(location, part.digest, part.size, cancel=cancel, progress=progress))
        return paths

    def digest_of(self, path: Path) -> tuple[str, int]:
        return self.blobs.digest_of(path)
