"""Content-addressed blob store: ``blobs/sha256/<hex>``, written atomically, verified on read.

Invariant: a file at ``blobs/sha256/<hex>`` always has sha256 ``<hex>`` unless the
disk was tampered with, which :meth:`BlobStore.open_verified` detects.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeship.errors import BlobCorruptedError, RegistryError

__all__ = ["CHUNK", "BlobStore", "sha256_file"]

CHUNK = 1 << 20  # bytes read per step when hashing or copying


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BlobStore:
    """Stores each distinct file once, named by its sha256."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir

    def path_of(self, hexdigest: str) -> Path:
        return self.root / hexdigest

    def has(self, hexdigest: str) -> bool:
        return self.path_of(hexdigest).is_file()

    def put_file(self, source: Path, hexdigest: str) -> None:
        """Copy ``source`` in under ``hexdigest`` unless it is there already.

        The copy is hashed while it is written, so a file that changes between
        hashing and storing is refused rather than stored under a wrong address.
        """
        target = self.path_of(hexdigest)
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != hexdigest:
                raise RegistryError(f"{source} changed while it was being registered; register it again.")
            tmp.chmod(0o444)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def writer(self) -> BlobWriter:
        """A temporary file that hashes what is written to it; :meth:`BlobWriter.commit` stores it by its digest."""
        return BlobWriter(self)

    def verify(self, hexdigest: str) -> Path:
        """Return the blob's path after checking its bytes still hash to its name."""
        path = self.path_of(hexdigest)
        if not path.is_file():
            raise BlobCorruptedError(
                f"Blob sha256:{hexdigest} is missing from {self.root}; the workspace is damaged, "
                "register the model again."
            )
        actual = sha256_file(path)
        if actual != hexdigest:
            raise BlobCorruptedError(
                f"Blob sha256:{hexdigest} is corrupted (its content hashes to sha256:{actual}); "
                "delete the model version and register it again."
            )
        return path

    def copy_verified(self, hexdigest: str, target: Path) -> None:
        """Copy a blob to ``target`` while hashing it; raise if the bytes do not match."""
        source = self.path_of(hexdigest)
        if not source.is_file():
            self.verify(hexdigest)  # raises the 'missing' error
        digest = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as src, target.open("wb") as out:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != hexdigest:
            target.unlink(missing_ok=True)
            raise BlobCorruptedError(
                f"Blob sha256:{hexdigest} is corrupted (its content hashes to sha256:{digest.hexdigest()}); "
                "delete the model version and register it again."
            )

    def remove(self, hexdigest: str) -> None:
        self.path_of(hexdigest).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[str]:
        if self.root.is_dir():
            yield from (p.name for p in self.root.iterdir() if p.is_file())


class BlobWriter:
    """Bytes arriving in pieces (an HTTP upload): hashed and counted as written, stored only by :meth:`commit`.

    Nothing is visible under a digest until the whole content hashed to it; :meth:`close`
    removes the temporary file of an upload that did not finish.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self.path = Path(name)
        self._out = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._out.write(chunk)
        self.size += len(chunk)

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> str:
        """Store the bytes under their sha256 (once: an existing blob is kept); returns the hex digest."""
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        hexdigest = self.hexdigest
        self.store.root.mkdir(parents=True, exist_ok=True)
        if not self.store.has(hexdigest):
            self.path.chmod(0o444)
            os.replace(self.path, self.store.path_of(hexdigest))
        return hexdigest

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()
        self.path.unlink(missing_ok=True)
