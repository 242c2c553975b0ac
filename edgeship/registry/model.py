"""``Model``: the Azure ML v1 model API over an edgeship workspace.

Mirrors ``azureml.core.model.Model``: ``Model.register(...)``, ``Model.list(...)``,
``Model.get_model_path(name, version=None)``, ``model.download(dir)``,
``model.delete()``. A model is a file or a folder; the name it had on disk is
kept, so a materialized copy reads ``<name>/<version>/<file or folder>`` exactly
as Azure ML lays models out under ``azureml-models``.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeship.errors import InputError
from edgeship.fsutil import atomic_dir
from edgeship.registry.blobs import BlobStore, sha256_file
from edgeship.registry.frameworks import detect_framework, validate_framework
from edgeship.registry.refs import validate_model_name
from edgeship.registry.store import ModelFile, ModelRecord, RegistryStore
from edgeship.workspace import Workspace

__all__ = ["Model", "tree_digest"]


def tree_digest(files: list[ModelFile]) -> str:
    """Digest of a folder model: sha256 over its sorted ``<digest>  <relpath>`` lines."""
    lines = "".join(f"{f.digest}  {f.relpath}\n" for f in sorted(files, key=lambda f: f.relpath))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _scan(path: Path) -> tuple[bool, list[tuple[Path, ModelFile]]]:
    if not path.exists():
        raise InputError(f"Model path {path} does not exist; give the file or folder to register.")
    if path.is_file():
        return False, [(path, ModelFile(path.name, sha256_file(path), path.stat().st_size))]
    if not path.is_dir():
        raise InputError(f"Model path {path} is neither a file nor a folder.")
    found: list[tuple[Path, ModelFile]] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        found.append((file, ModelFile(rel, sha256_file(file), file.stat().st_size)))
    if not found:
        raise InputError(f"Model folder {path} is empty; a model needs at least one file.")
    return True, found


def _clean_pairs(kind: str, values: dict[str, str] | None) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for key, value in (values or {}).items():
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"A {kind} needs a non-empty key (write key=value).")
        cleaned[key] = "" if value is None else str(value)
    return cleaned


class Model:
    """A registered model version (Azure ML's ``Model``)."""

    def __init__(self, workspace: Workspace, record: ModelRecord) -> None:
        self.workspace = workspace
        self.record = record

    # Azure ML attribute names -------------------------------------------------
    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def id(self) -> str:
        return self.record.ref

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.record.tags)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self.record.properties)

    @property
    def description(self) -> str:
        return self.record.description

    @property
    def model_framework(self) -> str:
        return self.record.framework

    @property
    def digest(self) -> str:
        return self.record.digest

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version}, digest={self.digest!r})"

    def serialize(self) -> dict[str, Any]:
        return self.record.to_json()

    # Constructors -------------------------------------------------------------
    @staticmethod
    def _store(workspace: Workspace) -> tuple[RegistryStore, BlobStore]:
        workspace.require()
        return RegistryStore(workspace.db_path), BlobStore(workspace.blobs_dir, workspace.tmp_dir)

    @classmethod
    def register(
        cls,
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
    ) -> Model:
        """Register a file or folder as the next version of ``model_name``.

        Hashing happens before the write lock; copying blobs and allocating the
        version happen inside it, so concurrent registers never collide and a
        failure leaves the registry as it was.
        """
        validate_model_name(model_name)
        framework = validate_framework(model_framework) if model_framework else None
        path = Path(model_path).expanduser()
        is_dir, found = _scan(path)
        files = [f for _, f in found]
        digest = tree_digest(files) if is_dir else files[0].digest
        framework = framework or detect_framework([src for src, _ in found])
        store, blobs = cls._store(workspace)
        with store.write() as conn:
            for source, meta in found:
                blobs.put_file(source, meta.digest)
            record = ModelRecord(
                name=model_name,
                version=store.next_version(conn, model_name),
                digest=f"sha256:{digest}",
                root_name=path.resolve().name,
                is_dir=is_dir,
                framework=framework,
                description=description or "",
                tags=_clean_pairs("tag", tags),
                properties=_clean_pairs("property", properties),
                size=sum(f.size for f in files),
                created_at=time.time(),
                files=tuple(files),
            )
            store.insert(conn, record)
        return cls(workspace, record)

    @classmethod
    def get(cls, workspace: Workspace, name: str, version: int | None = None) -> Model:
        validate_model_name(name)
        store, _ = cls._store(workspace)
        return cls(workspace, store.get(name, version))

    @classmethod
    def list(
        cls,
        workspace: Workspace,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        latest: bool = False,
    ) -> builtins.list[Model]:
        store, _ = cls._store(workspace)
        records = store.list(name, tags)
        if latest:
            newest: dict[str, ModelRecord] = {}
            for record in records:
                newest[record.name] = record  # records are ordered by version
            records = list(newest.values())
        return [cls(workspace, r) for r in records]

    @classmethod
    def get_model_path(
        cls, model_name: str, version: int | None = None, _workspace: Workspace | None = None
    ) -> str:
        """Path to a verified local copy of the model's file or folder (Azure ML semantics)."""
        workspace = _workspace or Workspace.at()
        return str(cls.get(workspace, model_name, version).materialize())

    # Operations on one version ------------------------------------------------
    def materialize(self) -> Path:
        """Verified copy under ``cache/models/<name>/<version>/<root_name>``, built once."""
        version_dir = self.workspace.cache_dir / "models" / self.name / str(self.version)
        marker = version_dir / ".edgeship-digest"
        if not (marker.is_file() and marker.read_text() == self.digest):
            with atomic_dir(version_dir) as build:
                self._write_files(build)
                (build / ".edgeship-digest").write_text(self.digest)
        return version_dir / self.record.root_name

    def _write_files(self, target_dir: Path) -> None:
        _, blobs = self._store(self.workspace)
        root = target_dir / self.record.root_name if self.record.is_dir else target_dir
        for f in self.record.files:
            blobs.copy_verified(f.digest, root / f.relpath)

    def download(self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False) -> str:
        """Write the model's file or folder into ``target_dir``; returns the written path."""
        target = Path(target_dir).expanduser()
        dest = target / self.record.root_name
        if dest.exists() and not exist_ok:
            raise InputError(f"{dest} already exists; remove it or choose another output folder.")
        created = not target.exists()
        target.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target, prefix=f".download-{self.name}-{self.version}-"))
        try:
            self._write_files(scratch)
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(scratch / self.record.root_name, dest)
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)  # a failed download leaves no folder it made
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return str(dest)

    def add_properties(self, properties: dict[str, str]) -> None:
        """Add key/value pairs to this version's properties (Azure ML's ``Model.add_properties``).

        Properties describe a version after the fact (a profile's recommendation is
        one); a key given again is replaced. The model's files and digest never change.
        """
        added = _clean_pairs("property", properties)
        store, _ = self._store(self.workspace)
        with store.write() as conn:
            merged = store.merge_properties(conn, self.name, self.version, added)
        self.record = replace(self.record, properties=merged)

    def delete(self) -> None:
        """Remove this version; blobs no other version uses are removed too."""
        store, blobs = self._store(self.workspace)
        with store.write() as conn:
            _, orphans = store.delete(conn, self.name, self.version)
            for digest in orphans:
                blobs.remove(digest)
        shutil.rmtree(self.workspace.cache_dir / "models" / self.name / str(self.version), ignore_errors=True)

    def ensure_intact(self) -> None:
        """Raise BlobCorruptedError if any of the version's blobs no longer matches its digest."""
        _, blobs = self._store(self.workspace)
        for f in self.record.files:
            blobs.verify(f.digest)

