"""``Catalog``: signed modules and the blobs devices download. Modules enter the hub only verified.

An upload is checked against the trust root's release keys (``verify_module_dir``)
before anything is stored; its blobs go into the content-addressed store first, then
the row, so a module row never names a blob the hub cannot serve. A name and version
are immutable: the same pair with another manifest is a conflict (ADR 0009).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edgeship.errors import InputError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services.keys import SigningKeys
from edgeship.hub.services.rules import DIGEST, validate_module_name
from edgeship.hub.store import HubStore, ModuleRecord
from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE
from edgeship.modules.verify import verify_module_dir
from edgeship.registry.blobs import BlobStore, sha256_file

__all__ = ["Catalog"]


class Catalog:
    """Modules by name and version, and their artifacts by digest."""

    def __init__(self, store: HubStore, blobs: BlobStore, keys: SigningKeys, *,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.blobs = blobs
        self.keys = keys
        self.clock = clock

    def upload_module(self, directory: Path) -> ModuleRecord:
        """Verify a module directory against the hub's release keys, then store its blobs and envelope.

        Blobs go in first (content-addressed, idempotent), so a module row never
        names a blob the hub cannot serve.
        """
        directory = Path(directory)
        verified = verify_module_dir(directory, self.keys.trust_root)
        manifest = verified.manifest
        validate_module_name(manifest.name)
        for rel, digest in ((manifest.bundle.path, manifest.bundle.digest),) + (
            ((manifest.image.archive.path, manifest.image.archive.digest),)
            if manifest.image and manifest.image.archive
            else ()
        ):
            self.blobs.put_file(directory / rel, digest.removeprefix("sha256:"))
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
        stored, _new = self.store.add_module(record)
        return stored

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
