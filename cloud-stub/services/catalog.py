"""``Catalog``: signed modules and the blobs devices download. Modules enter the hub only verified.

A schemaVersion 2 module's parts (``parts/<hex>``: wheels, source, model chunks, image
layers) go into the same content-addressed store as bundles, so a part many modules
share is stored once (ADR 0028); ``module_parts`` records which module names which.

An upload is checked against the trust root's release keys (``verify_module_dir``)
before anything is stored; its blobs go into the content-addressed store first, then
the row, so a module row never names a blob the hub cannot serve. A name and version
are immutable: the same pair with another manifest is a conflict (ADR 0009).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeship.errors import InputError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services.keys import SigningKeys
from edgeship.hub.services.rules import DIGEST, validate_module_name
from edgeship.hub.store import HubStore, ModuleRecord
from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE, ModuleManifest
from edgeship.modules.verify import PARTS_DIR, file_digest, verify_module_dir
from edgeship.registry.blobs import BlobStore, sha256_file

__all__ = ["MAX_UPLOAD_BYTES", "Catalog", "UploadTooLargeError"]

MAX_UPLOAD_BYTES = 8 * 1024**3  # one artifact; a bundle with its wheels is ~50-100 MB, an image archive ~0.5-2 GB


class UploadTooLargeError(InputError):
    """An uploaded artifact over :data:`MAX_UPLOAD_BYTES` (413)."""


def _hex(digest: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise InputError(f"Digest {digest!r} must be 'sha256:' and 64 lowercase hex digits.")
    return digest.removeprefix("sha256:")


class Catalog:
    """Modules by name and version, and their artifacts by digest."""

    def __init__(self, store: HubStore, blobs: BlobStore, keys: SigningKeys, *,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.blobs = blobs
        self.keys = keys
        self.clock = clock

    def upload_module(
        self, directory: Path, *, digest_of: Callable[[Path], tuple[str, int]] = file_digest,
    ) -> ModuleRecord:
        """Verify a module directory against the hub's release keys, then store its blobs and envelope.

        Blobs go in first (content-addressed, idempotent), so a module row never
        names a blob the hub cannot serve. ``digest_of`` is ``verify_module_dir``'s: how a
        file's digest and size are known (by default, by reading it).
        """
        directory = Path(directory)
        verified = verify_module_dir(directory, self.keys.trust_root, digest_of=digest_of)
        manifest = verified.manifest
        validate_module_name(manifest.name)
        for rel, digest in ((manifest.bundle.path, manifest.bundle.digest),) + (
            ((manifest.image.archive.path, manifest.image.archive.digest),)
            if manifest.image and manifest.image.archive
            else ()
        ):
            self.blobs.put_file(directory / rel, digest.removeprefix("sha256:"))
        parts = manifest.parts.all() if manifest.parts is not None else []
        for part in parts:  # verified above: parts/<hex> holds each with its digest and size
            hexdigest = part.digest.removeprefix("sha256:")
            self.blobs.put_file(directory / PARTS_DIR / hexdigest, hexdigest)
        record = ModuleRecord(
            name=manifest.name,
            version=manifest.version,
            envelope=json.loads((directory / ENVELOPE_FILE).read_bytes()),
            manifest_digest="sha256:" + sha256_file(directory / MANIFEST_FILE),
            bundle_digest=manifest.bundle.digest,
            image_digest=manifest.image.archive.digest if manifest.image and manifest.image.archive else None,
            variant=manifest.variant,
            created=self.clock(),
        )
        stored, _new = self.store.add_module(record, [p.digest for p in parts])
        return stored

    # uploads over HTTP: the artifacts by digest first, then the signed envelope ----------------
    def has_upload(self, digest: str) -> bool:
        """True when the hub holds an artifact with this digest (an upload of it can be skipped)."""
        return self.blobs.has(_hex(digest))

    def upload_size(self, digest: str) -> int:
        """The size of an artifact the hub holds; :class:`HubNotFoundError` when it holds none."""
        path = self.blobs.path_of(_hex(digest))
        if not path.is_file():
            raise HubNotFoundError(f"The hub holds no artifact {digest}; upload it with PUT /uploads/{digest}.")
        return path.stat().st_size

    async def receive_upload(self, digest: str, chunks: AsyncIterable[bytes], *, declared: int | None) -> bool:
        """Store an uploaded artifact if its bytes hash to ``digest``; False when the hub had it already.

        Bounded by :data:`MAX_UPLOAD_BYTES`; nothing is stored unless every byte arrived and
        hashed right. An artifact is served to devices only once a verified module names it
        (:meth:`blob_file`), so an upload alone exposes nothing.
        """
        hexdigest = _hex(digest)
        if declared is not None and declared > MAX_UPLOAD_BYTES:
            raise UploadTooLargeError(
                f"The upload of {digest} is {declared} bytes; the hub takes artifacts up to {MAX_UPLOAD_BYTES} bytes."
            )
        if self.blobs.has(hexdigest):
            return False
        writer = self.blobs.writer()
        try:
            async for chunk in chunks:
                writer.write(chunk)
                if writer.size > MAX_UPLOAD_BYTES:
                    raise UploadTooLargeError(
                        f"The upload of {digest} passed {MAX_UPLOAD_BYTES} bytes, the most the hub takes; "
                        "nothing was stored."
                    )
            if writer.hexdigest != hexdigest:
                raise InputError(
                    f"The uploaded bytes hash to sha256:{writer.hexdigest}, not {digest}; nothing was stored. "
                    "Upload the artifact the manifest names, unchanged."
                )
            writer.commit()
            return True
        finally:
            writer.close()

    def upload_signed(self, envelope: Mapping[str, Any]) -> ModuleRecord:
        """Take a module from its release-signed envelope, once every artifact its manifest names was uploaded.

        The hub lays the module out in a scratch folder (the manifest from the envelope's
        payload, the artifacts linked from the blob store) and verifies it exactly as a
        module from a workspace (:meth:`upload_module`).
        """
        try:
            raw = json.dumps(dict(envelope)).encode()
            payload = base64.b64decode(str(envelope.get("payload", "")), validate=True)
            manifest = ModuleManifest.from_bytes(payload)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise InputError(f"The module envelope's payload is not a module manifest ({exc}).") from exc
        parts = {f"{PARTS_DIR}/{p.digest.removeprefix('sha256:')}": p.digest
                 for p in (manifest.parts.all() if manifest.parts is not None else [])}
        wanted = {ref.path: ref.digest for ref in manifest.files} | parts
        missing = [digest for digest in wanted.values() if not self.blobs.has(_hex(digest))]
        if missing:
            raise InputError(
                f"Module {manifest.name}:{manifest.version} names artifacts the hub does not hold: "
                f"{', '.join(missing)}; upload each first (PUT /uploads/<digest>), then the envelope."
            )
        self.blobs.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.blobs.tmp_dir, prefix="module-") as scratch:
            directory = Path(scratch)
            (directory / MANIFEST_FILE).write_bytes(payload)
            (directory / ENVELOPE_FILE).write_bytes(raw)
            # artifacts linked from the blob store were hashed to their names when they were written
            # (receive_upload): verification takes that, so a multi-GB image archive is not hashed twice
            linked: dict[Path, tuple[str, int]] = {}
            for rel, digest in wanted.items():
                target = directory / rel
                if not target.resolve().is_relative_to(directory.resolve()):
                    raise InputError(f"Module {manifest.name}:{manifest.version} names a file outside it: {rel}.")
                target.parent.mkdir(parents=True, exist_ok=True)
                blob = self.blobs.path_of(_hex(digest))
                try:
                    os.link(blob, target)
                    linked[target] = (digest, target.stat().st_size)
                except OSError:
                    shutil.copyfile(blob, target)  # a copy is read (and hashed) by the verification
            return self.upload_module(directory, digest_of=lambda path: linked.get(path) or file_digest(path))

    def upload_from_workspace(self, workspace_root: Path, name: str, version: int | None = None) -> ModuleRecord:
        """Upload a module that ``edgeship package`` stored in a (packaging) workspace.

        ``workspace_root`` comes from the caller: it must be an absolute path (a relative
        or empty one would resolve against the hub's working directory or its default
        home), and a path that is no workspace is the caller's mistake (InputError).
        """
        from edgeship.errors import WorkspaceError
        from edgeship.modules.store import ModuleStore
        from edgeship.workspace import Workspace

        root = Path(workspace_root)
        if not str(workspace_root) or not root.is_absolute():
            raise InputError(
                f"The workspace {str(workspace_root)!r} must be an absolute path on the hub's machine, "
                "e.g. the EDGESHIP_HOME 'edgeship package' used."
            )
        try:
            store = ModuleStore(Workspace.at(root))
        except (WorkspaceError, OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise InputError(
                f"No edgeship workspace at {str(workspace_root)!r} on the hub's machine; pass the folder where "
                "'edgeship package' stored the module (its EDGESHIP_HOME)."
            ) from exc
        except sqlite3.Error as exc:  # registry.db exists but is not a database (or is locked for good)
            raise InputError(
                f"The workspace at {str(workspace_root)!r} has a registry database the hub cannot read ({exc}); "
                "check it with 'edgeship module list' on that machine."
            ) from exc
        stored = store.get(name, version)
        return self.upload_module(stored.directory)

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        return self.store.list_modules(None if name is None else validate_module_name(name))

    def get_module(self, name: str, version: int) -> ModuleRecord:
        return self.store.get_module(validate_module_name(name), version)

    def blob_file(self, digest: str) -> Path:
        """The file of a module artifact by digest. Only blobs of stored modules are served,
        so the hub never exposes other workspace blobs (registered models) by guessing."""
        if not DIGEST.fullmatch(digest):
            raise InputError(f"Blob address {digest!r} must be 'sha256:' and 64 lowercase hex digits.")
        path = self.blobs.path_of(digest.removeprefix("sha256:"))
        if not self.store.has_blob(digest) or not path.is_file():
            raise HubNotFoundError(f"No blob {digest} on the hub.")
        return path
