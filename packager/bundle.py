"""Bundle: one deterministic, uncompressed tar holding everything a module needs to run offline.

Layout (see docs/adr/0005-bundle-and-image-layout.md)::

    requirements.lock                        name==version + --hash=sha256 for every wheel
    wheelhouse/<wheel>.whl                   the environment, installable with --no-index
    src/...                                  the source directory
    azureml-models/<name>/<version>/<file or folder>   Azure ML's model layout
    bundle.json                              what is inside: entry script, models, lock digest

Invariants:

- Same inputs give byte-identical bytes (hence the same digest): entries come in a
  fixed section order (the order above, models last) and sorted by path within a
  section; every entry has mtime ``SOURCE_DATE_EPOCH`` (else 0), uid/gid 0, empty
  owner names, mode 0644 or 0755; PAX headers appear only for long or non-ASCII
  names and never carry timestamps.
- Models (and ``bundle.json``, which lists them) go last so a model-only change
  leaves every byte before them unchanged:
  a device holding the previous bundle can fetch just the tail (delta or resume).
- Model bytes come from the blob store and are hashed while they are written; a
  corrupted blob aborts the build and nothing is left at the output path.
- The environment lock digest is the sha256 of ``requirements.lock``; it changes
  only when a wheel changes, so an agent can reuse a venv across model-only updates.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgeship.errors import BlobCorruptedError, PackagingError
from edgeship.registry import Model
from edgeship.registry.blobs import BlobStore, sha256_file

__all__ = [
    "BUNDLE_SCHEMA_VERSION",
    "BundleInfo",
    "BundledModel",
    "build_bundle",
    "bundle_mtime",
    "render_lock",
]

BUNDLE_SCHEMA_VERSION = 1
MODELS_DIR = "azureml-models"
_SECTIONS = ("requirements.lock", "wheelhouse", "src", MODELS_DIR, "bundle.json")
_SKIP_NAMES = {"__pycache__", ".git"}
_SCRATCH = re.compile(r"^\..+\.(building|old)-")  # fsutil.atomic_dir's folders beside an output
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class BundledModel:
    """A model as placed in the bundle: ``path`` is its folder under ``azureml-models``."""

    name: str
    version: int
    digest: str
    path: str


@dataclass(frozen=True)
class BundleInfo:
    """The built bundle. Digests are ``sha256:<hex>``; ``size`` is in bytes."""

    path: Path
    digest: str
    size: int
    env_lock_digest: str
    entry_script: str | None
    models: tuple[BundledModel, ...]


def bundle_mtime() -> int:
    """The mtime of every entry: ``SOURCE_DATE_EPOCH`` when set (reproducible-builds.org), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0").strip() or "0"
    if not value.isdigit():
        raise PackagingError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds; unset or fix it."
        )
    return int(value)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def render_lock(wheels: Iterable[Path]) -> str:
    """``requirements.lock`` text for ``wheels``: one pinned, hash-checked line per distribution.

    Installs with ``pip install --no-index --find-links wheelhouse --require-hashes -r
    requirements.lock``. Two different versions of one distribution are an error:
    pip could install only one of them.
    """
    pins: dict[str, tuple[str, set[str]]] = {}
    for wheel in wheels:
        match = _WHEEL_NAME.match(wheel.name)
        if not match:
            raise PackagingError(f"{wheel.name} is not a wheel file name; the wheelhouse holds only wheels.")
        name, version = _canonical(match["name"]), match["version"]
        known = pins.setdefault(name, (version, set()))
        if known[0] != version:
            raise PackagingError(
                f"the wheelhouse holds {name} {known[0]} and {version}; keep one version per distribution."
            )
        known[1].add(sha256_file(wheel))
    lines = [
        "# edgeship requirements lock: every wheel in wheelhouse/, pinned by sha256.",
        "# pip install --no-index --find-links wheelhouse --require-hashes -r requirements.lock",
    ]
    for name in sorted(pins):
        version, hashes = pins[name]
        lines.append(f"{name}=={version}" + "".join(f" \\\n    --hash=sha256:{h}" for h in sorted(hashes)))
    return "\n".join(lines) + "\n"


class _Entry:
    """One tar member to write: a folder, in-memory bytes, a file on disk, or a blob to verify."""

    def __init__(
        self,
        arcname: str,
        *,
        data: bytes | None = None,
        file: Path | None = None,
        blob: str | None = None,
        executable: bool = False,
        is_dir: bool = False,
    ) -> None:
        self.arcname, self.data, self.file, self.blob = arcname, data, file, blob
        self.executable, self.is_dir = executable, is_dir

    def sort_key(self) -> tuple[int, str]:
        return _SECTIONS.index(self.arcname.split("/", 1)[0]), self.arcname


class _HashingReader:
    """File wrapper that hashes what tarfile reads, so a blob is verified as it is copied."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.hash = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        return data


IGNORE_FILES = (".amlignore", ".gitignore")  # the first one present is used, as Azure ML's snapshots did


def _ignored(source_dir: Path) -> Callable[[str], bool]:
    """Whether a path (relative, ``/``-separated, folders ending in ``/``) is left out by the folder's ignore file.

    Azure ML left out what ``.amlignore`` (else ``.gitignore``) at the root of the source
    directory names, with gitignore's rules; a trained ``outputs/`` ignored there must not
    land in ``src/``. The rules are pathspec's implementation of gitignore.
    """
    import pathspec

    for name in IGNORE_FILES:
        path = source_dir / name
        if path.is_file():
            spec = pathspec.GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8-sig").splitlines())
            return spec.match_file
    return lambda _rel: False


def _source_entries(source_dir: Path, exclude: Sequence[Path]) -> Iterator[_Entry]:
    excluded = {p.resolve() for p in exclude}
    ignored = _ignored(source_dir)
    for folder, dirnames, filenames in os.walk(source_dir):
        here = Path(folder)
        rel_dir = here.relative_to(source_dir).as_posix()
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_NAMES
            and not _SCRATCH.match(d)
            and (here / d).resolve() not in excluded
            and not (here / d).is_symlink()
            and not ignored(f"{prefix}{d}/")
        )
        if rel_dir != ".":
            yield _Entry(f"src/{rel_dir}", is_dir=True)
        for name in filenames:
            path = here / name
            if name.endswith(".pyc") or path.resolve() in excluded or not path.is_file():
                continue  # bytecode, the output, sockets and dangling links are not source
            rel = path.relative_to(source_dir).as_posix()
            if ignored(rel):
                continue
            yield _Entry(f"src/{rel}", file=path, executable=bool(path.stat().st_mode & 0o111))


def _model_entries(models: Sequence[Model]) -> tuple[list[_Entry], list[BundledModel]]:
    entries: list[_Entry] = []
    bundled: list[BundledModel] = []
    seen: set[tuple[str, int]] = set()
    for model in models:
        if (model.name, model.version) in seen:
            raise PackagingError(f"model {model.name}:{model.version} is listed twice; list each model once.")
        seen.add((model.name, model.version))
        base = f"{MODELS_DIR}/{model.name}/{model.version}"
        entries += [_Entry(f"{MODELS_DIR}/{model.name}", is_dir=True), _Entry(base, is_dir=True)]
        root = f"{base}/{model.record.root_name}" if model.record.is_dir else base
        dirs: set[str] = {root} if model.record.is_dir else set()
        for f in model.record.files:
            arcname = f"{root}/{f.relpath}"
            parent = arcname.rsplit("/", 1)[0]
            while parent.startswith(root) and parent != base:
                dirs.add(parent)
                parent = parent.rsplit("/", 1)[0]
            entries.append(_Entry(arcname, blob=f.digest))
        entries += [_Entry(d, is_dir=True) for d in dirs]
        bundled.append(BundledModel(model.name, model.version, model.digest, root))
    return entries, bundled


def _tarinfo(entry: _Entry, mtime: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.arcname)
    info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
    if entry.is_dir:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.type, info.size = tarfile.REGTYPE, size
        info.mode = 0o755 if entry.executable else 0o644
    return info


def _write_entry(tar: tarfile.TarFile, entry: _Entry, mtime: int, blobs: dict[str, BlobStore]) -> None:
    if entry.is_dir:
        tar.addfile(_tarinfo(entry, mtime, 0))
    elif entry.data is not None:
        tar.addfile(_tarinfo(entry, mtime, len(entry.data)), io.BytesIO(entry.data))
    elif entry.file is not None:
        with entry.file.open("rb") as handle:
            tar.addfile(_tarinfo(entry, mtime, os.fstat(handle.fileno()).st_size), handle)
    else:
        assert entry.blob is not None
        hexdigest = entry.blob.removeprefix("sha256:")
        store = blobs[entry.blob]
        path = store.verify(hexdigest) if not store.has(hexdigest) else store.path_of(hexdigest)
        with path.open("rb") as handle:
            reader = _HashingReader(handle)
            tar.addfile(_tarinfo(entry, mtime, os.fstat(handle.fileno()).st_size), reader)
        if reader.hash.hexdigest() != hexdigest:
            raise BlobCorruptedError(
                f"Blob sha256:{hexdigest} ({entry.arcname}) is corrupted (its content hashes to "
                f"sha256:{reader.hash.hexdigest()}); delete the model version and register it again."
            )


def build_bundle(
    output: Path,
    *,
    models: Sequence[Model],
    wheelhouse: Path,
    source_dir: Path | None = None,
    entry_script: Path | None = None,
    exclude: Sequence[Path] = (),
    mtime: int | None = None,
) -> BundleInfo:
    """Write the bundle tar to ``output`` (atomically) and describe it.

    ``entry_script`` is a path to the script, inside ``source_dir`` when one is given
    (relative paths are taken relative to ``source_dir``); without ``source_dir`` the
    script alone becomes ``src/``. ``exclude`` names paths under ``source_dir`` to
    leave out (``output``'s folder always is). No entry script means a no-code module.
    """
    output = Path(output).resolve()
    stamp = bundle_mtime() if mtime is None else mtime
    entries: list[_Entry] = []
    script_rel: str | None = None
    if source_dir is not None:
        source_dir = Path(source_dir).resolve()
        if not source_dir.is_dir():
            raise PackagingError(f"source directory {source_dir} does not exist or is not a folder.")
        entries.append(_Entry("src", is_dir=True))
        entries += _source_entries(source_dir, [*exclude, output.parent, output])
    if entry_script is not None:
        script = Path(entry_script)
        script = (source_dir / script if source_dir and not script.is_absolute() else script).resolve()
        if not script.is_file():
            raise PackagingError(
                f"entry script {script} does not exist; check entryScript and sourceDirectory."
            )
        if source_dir is None:
            entries += [_Entry("src", is_dir=True), _Entry(f"src/{script.name}", file=script)]
            script_rel = script.name
        elif script.is_relative_to(source_dir):
            script_rel = script.relative_to(source_dir).as_posix()
            if not any(e.arcname == f"src/{script_rel}" for e in entries):
                raise PackagingError(
                    f"entry script {script_rel} is left out of the source directory by its .amlignore/.gitignore; "
                    "remove the pattern that matches it."
                )
        else:
            raise PackagingError(f"entry script {script} lies outside the source directory {source_dir}.")
    wheels = sorted(Path(wheelhouse).glob("*.whl"))
    if not wheels:
        raise PackagingError(
            f"the wheelhouse {wheelhouse} holds no wheels; build it with build_wheelhouse first."
        )
    lock = render_lock(wheels).encode("utf-8")
    env_lock_digest = "sha256:" + hashlib.sha256(lock).hexdigest()
    entries += [_Entry("requirements.lock", data=lock), _Entry("wheelhouse", is_dir=True)]
    entries += [_Entry(f"wheelhouse/{w.name}", file=w) for w in wheels]
    model_entries, bundled = _model_entries(models)
    if bundled:
        entries += [_Entry(MODELS_DIR, is_dir=True), *model_entries]
    descriptor = {
        "schemaVersion": BUNDLE_SCHEMA_VERSION,
        "entryScript": f"src/{script_rel}" if script_rel else None,
        "sourceDirectory": "src" if (source_dir is not None or script_rel) else None,
        "envLockDigest": env_lock_digest,
        "models": [vars(m) for m in bundled],
    }
    entries.append(
        _Entry("bundle.json", data=(json.dumps(descriptor, indent=2, sort_keys=True) + "\n").encode())
    )
    entries.sort(key=_Entry.sort_key)
    names = [e.arcname for e in entries]
    if len(set(names)) != len(names):
        raise PackagingError("two bundle entries have the same path; check the model and source names.")
    blobs = {f.digest: _blob_store(m) for m in models for f in m.record.files}
    _write_tar(output, entries, stamp, blobs)
    return BundleInfo(
        path=output,
        digest="sha256:" + sha256_file(output),
        size=output.stat().st_size,
        env_lock_digest=env_lock_digest,
        entry_script=descriptor["entryScript"],  # type: ignore[arg-type]
        models=tuple(bundled),
    )


def _blob_store(model: Model) -> BlobStore:
    ws = model.workspace
    return BlobStore(ws.blobs_dir, ws.tmp_dir)


def _write_tar(output: Path, entries: list[_Entry], mtime: int, blobs: dict[str, BlobStore]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
                for entry in entries:
                    _write_entry(tar, entry, mtime, blobs)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp_name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(tmp_name, output)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
