"""The workspace's module store: ``modules/<name>/<version>/`` plus a row per module in registry.db.

Versions are allocated like model versions (inside ``BEGIN IMMEDIATE``), as a
``pending`` row that becomes ``ready`` only once the directory is complete; a build
that fails or is interrupted removes its row, and a killed one leaves only a pending
row that listings ignore. A stored module directory is a verified copy of what the
packager wrote to its output folder.
"""

from __future__ import annotations

import builtins
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from edgeship.errors import InputError
from edgeship.fsutil import atomic_dir
from edgeship.modules.manifest import MANIFEST_FILE, ModuleManifest
from edgeship.registry.refs import validate_model_name
from edgeship.registry.store import RegistryStore
from edgeship.workspace import Workspace

__all__ = ["ModuleStore", "StoredModule", "UnknownModuleError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS modules (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    digest     TEXT NOT NULL DEFAULT '',
    target     TEXT NOT NULL DEFAULT '',
    variant    TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
"""


class UnknownModuleError(InputError):
    """No stored module has that name or version."""


@dataclass(frozen=True)
class StoredModule:
    name: str
    version: int
    directory: Path
    digest: str  # sha256 of module.json's bytes
    target: str
    variant: str
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def manifest(self) -> ModuleManifest:
        return ModuleManifest.from_bytes((self.directory / MANIFEST_FILE).read_bytes(), str(self.directory))


class ModuleStore:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace.require()
        self._db = RegistryStore(workspace.db_path)
        with self._db.write() as conn:
            conn.execute(_SCHEMA)

    def reserve(self, name: str) -> int:
        """Allocate the next version of ``name`` as a pending row."""
        validate_model_name(name)
        with self._db.write() as conn:
            row = conn.execute("SELECT MAX(version) FROM modules WHERE name = ?", (name,)).fetchone()
            version = int(row[0] or 0) + 1
            conn.execute(
                "INSERT INTO modules (name, version, status, created_at) VALUES (?, ?, 'pending', ?)",
                (name, version, time.time()),
            )
        return version

    def release(self, name: str, version: int) -> None:
        """Forget a pending reservation (the build failed)."""
        with self._db.write() as conn:
            conn.execute("DELETE FROM modules WHERE name = ? AND version = ? AND status = 'pending'", (name, version))

    def commit(self, manifest: ModuleManifest, built: Path, digest: str) -> StoredModule:
        """Copy a finished module directory into the store and mark it ready."""
        target = self.directory_of(manifest.name, manifest.version)
        with atomic_dir(target) as build:
            for source in sorted(p for p in built.rglob("*") if p.is_file()):
                dest = build / source.relative_to(built)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)  # a copy, not a link: editing the output must not alter the store
        with self._db.write() as conn:
            conn.execute(
                "UPDATE modules SET status = 'ready', digest = ?, target = ?, variant = ?"
                " WHERE name = ? AND version = ?",
                (digest, manifest.target, manifest.variant, manifest.name, manifest.version),
            )
        return self.get(manifest.name, manifest.version)

    def directory_of(self, name: str, version: int) -> Path:
        return self.workspace.modules_dir / name / str(version)

    def list(self, name: str | None = None) -> builtins.list[StoredModule]:
        query = "SELECT * FROM modules WHERE status = 'ready'"
        args: tuple[str, ...] = ()
        if name is not None:
            query += " AND name = ?"
            args = (name,)
        with self._db.read() as conn:
            rows = conn.execute(query + " ORDER BY name, version", args).fetchall()
        return [self._stored(row) for row in rows]

    def get(self, name: str, version: int | None = None) -> StoredModule:
        validate_model_name(name)
        with self._db.read() as conn:
            if version is None:
                row = conn.execute(
                    "SELECT * FROM modules WHERE name = ? AND status = 'ready' ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT * FROM modules WHERE name = ? AND version = ? AND status = 'ready'", (name, version)
                ).fetchone()
        if row is None:
            what = name if version is None else f"{name}:{version}"
            raise UnknownModuleError(f"No module {what} is stored in this workspace; see 'edgeship module list'.")
        return self._stored(row)

    def _stored(self, row: sqlite3.Row) -> StoredModule:
        return StoredModule(
            name=row["name"],
            version=int(row["version"]),
            directory=self.directory_of(row["name"], int(row["version"])),
            digest=row["digest"],
            target=row["target"],
            variant=row["variant"],
            created_at=float(row["created_at"]),
        )
