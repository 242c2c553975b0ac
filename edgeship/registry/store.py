"""The registry's SQLite tables and the transactions over them.

Versions are allocated inside a ``BEGIN IMMEDIATE`` transaction, so two processes
registering the same name at the same moment get distinct versions; blobs are
written inside the same write lock, so a concurrent delete never removes a blob a
new version is about to reference.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.errors import ModelNotFoundError, RegistryError

__all__ = ["ModelFile", "ModelRecord", "RegistryStore", "ensure_schema"]

BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another process's write lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    root_name   TEXT NOT NULL,
    is_dir      INTEGER NOT NULL,
    framework   TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '{}',
    properties  TEXT NOT NULL DEFAULT '{}',
    size        INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_files (
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    relpath  TEXT NOT NULL,
    digest   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    PRIMARY KEY (name, version, relpath),
    FOREIGN KEY (name, version) REFERENCES models(name, version) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS model_files_digest ON model_files(digest);
"""


@dataclass(frozen=True)
class ModelFile:
    relpath: str  # posix path relative to the model's root (for a single file: its name)
    digest: str  # sha256 hex
    size: int


@dataclass(frozen=True)
class ModelRecord:
    """One registered model version. ``digest`` is ``sha256:<hex>`` over its file list."""

    name: str
    version: int
    digest: str
    root_name: str
    is_dir: bool
    framework: str
    description: str
    tags: dict[str, str]
    properties: dict[str, str]
    size: int
    created_at: float
    files: tuple[ModelFile, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "framework": self.framework,
            "description": self.description,
            "tags": self.tags,
            "properties": self.properties,
            "size": self.size,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            "path": self.root_name + ("/" if self.is_dir else ""),
            "files": [{"path": f.relpath, "digest": f"sha256:{f.digest}", "size": f.size} for f in self.files],
        }


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


def ensure_schema(db_path: Path) -> None:
    conn = _connect(db_path)
    try:
        conn.executescript(_SCHEMA)
    finally:
        conn.close()


class RegistryStore:
    """Row-level access to ``registry.db``. One short-lived connection per operation."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: the caller holds the database's write lock throughout."""
        conn = _connect(self.db_path)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RegistryError(f"The registry at {self.db_path} is locked by another process: {exc}.") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.db_path)
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def next_version(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT MAX(version) FROM models WHERE name = ?", (name,)).fetchone()
        return int(row[0] or 0) + 1

    @staticmethod
    def insert(conn: sqlite3.Connection, record: ModelRecord) -> None:
        conn.execute(
            "INSERT INTO models (name, version, digest, root_name, is_dir, framework, description, tags,"
            " properties, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.version,
                record.digest,
                record.root_name,
                int(record.is_dir),
                record.framework,
                record.description,
                json.dumps(record.tags, sort_keys=True),
                json.dumps(record.properties, sort_keys=True),
                record.size,
                record.created_at,
            ),
        )
        conn.executemany(
            "INSERT INTO model_files (name, version, relpath, digest, size) VALUES (?, ?, ?, ?, ?)",
            [(record.name, record.version, f.relpath, f.digest, f.size) for f in record.files],
        )

    @staticmethod
    def merge_properties(conn: sqlite3.Connection, name: str, version: int, added: dict[str, str]) -> dict[str, str]:
        """Add or replace some of one version's properties (read and written in the caller's transaction)."""
        row = conn.execute("SELECT properties FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is None:
            raise ModelNotFoundError(f"Model {name}:{version} does not exist; see 'edgeship model list'.")
        merged = {**json.loads(row["properties"]), **added}
        conn.execute(
            "UPDATE models SET properties = ? WHERE name = ? AND version = ?",
            (json.dumps(merged, sort_keys=True), name, version),
        )
        return merged

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        with self.read() as conn:
            return self._get(conn, name, version)

    @staticmethod
    def _get(conn: sqlite3.Connection, name: str, version: int | None) -> ModelRecord:
        if version is None:
            row = conn.execute(
                "SELECT * FROM models WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            ).fetchone()
        else:
            row = conn.execute("SELECT * FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is None:
            if version is None:
                raise ModelNotFoundError(f"No model named {name!r} is registered; see 'edgeship model list'.")
            known = [r[0] for r in conn.execute("SELECT version FROM models WHERE name = ? ORDER BY version", (name,))]
            hint = f"known versions: {', '.join(map(str, known))}" if known else "no version of it is registered"
            raise ModelNotFoundError(f"Model {name}:{version} does not exist ({hint}).")
        files = conn.execute(
            "SELECT relpath, digest, size FROM model_files WHERE name = ? AND version = ? ORDER BY relpath",
            (row["name"], row["version"]),
        ).fetchall()
        return _record(row, files)

    def list(self, name: str | None = None, tags: dict[str, str] | None = None) -> list[ModelRecord]:
        with self.read() as conn:
            if name is None:
                rows = conn.execute("SELECT * FROM models ORDER BY name, version").fetchall()
            else:
                rows = conn.execute("SELECT * FROM models WHERE name = ? ORDER BY version", (name,)).fetchall()
            records = [_record(row, ()) for row in rows]
        if tags:
            records = [r for r in records if all(r.tags.get(k) == v for k, v in tags.items())]
        return records

    def delete(self, conn: sqlite3.Connection, name: str, version: int) -> tuple[ModelRecord, builtins.list[str]]:
        """Delete one version; return it and the blob digests no other version references."""
        record = self._get(conn, name, version)
        conn.execute("DELETE FROM model_files WHERE name = ? AND version = ?", (name, version))
        conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version))
        orphans = [
            f.digest
            for f in record.files
            if conn.execute("SELECT 1 FROM model_files WHERE digest = ? LIMIT 1", (f.digest,)).fetchone() is None
        ]
        return record, orphans


def _record(row: sqlite3.Row, files: Any) -> ModelRecord:
    return ModelRecord(
        name=row["name"],
        version=int(row["version"]),
        digest=row["digest"],
        root_name=row["root_name"],
        is_dir=bool(row["is_dir"]),
        framework=row["framework"],
        description=row["description"],
        tags=json.loads(row["tags"]),
        properties=json.loads(row["properties"]),
        size=int(row["size"]),
        created_at=float(row["created_at"]),
        files=tuple(ModelFile(f["relpath"], f["digest"], int(f["size"])) for f in files),
    )
