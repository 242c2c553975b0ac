"""Install from parts: a schemaVersion 2 module's app folder, and its image for ``docker load`` (ADR 0028).

The agent verified the module folder (``verify_parts_dir``): ``parts/<hex>`` holds the
parts it fetched, each with its signed digest and size. From them:

- :func:`assemble_app` lays out what unpacking the bundle would have: ``src/`` and
  ``requirements.lock`` from the source part (unpacked with the bundle's tar-slip
  checks), ``wheelhouse/`` from the wheel parts (linked, not copied), and each model file
  from its chunks, checked against the file's signed digest as it is written;
- :func:`write_load_archive` writes the tar ``docker load`` reads (legacy layout:
  ``manifest.json``, the config, ``<diff id>/layer.tar``) holding only the layers the
  device fetched. Moby's ``docker load`` (non-containerd image store) skips a layer
  whose chain already exists without opening its file, so the layers the engine has
  are named in ``manifest.json`` and left out.

A part that is needed and missing is an error naming it; the next try fetches it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edgeship.errors import RuntimeFailure
from edgeship.modules.plain import ModuleManifest, Part, Parts

if TYPE_CHECKING:
    import tarfile

__all__ = ["PARTS_DIR", "assemble_app", "part_file", "present_layers", "write_load_archive"]

PARTS_DIR = "parts"
_COPY = 1 << 20  # bytes per read


def _parts(manifest: ModuleManifest) -> Parts:
    if manifest.parts is None:
        raise RuntimeFailure(f"Module {manifest.ref} is schemaVersion 1; it installs from its bundle, not parts.")
    return manifest.parts


def part_file(module_dir: Path, part: Part, manifest: ModuleManifest) -> Path:
    path = module_dir / PARTS_DIR / part.digest.removeprefix("sha256:")
    if not path.is_file():
        raise RuntimeFailure(
            f"Part {part.digest[:19]}… of module {manifest.ref} is not on the device; the update fetches it again."
        )
    return path


def assemble_app(module_dir: Path, dest: Path, manifest: ModuleManifest, *, wheelhouse: bool) -> None:
    """Lay out the app folder in the empty folder ``dest`` (``wheelhouse=False``: no ``wheelhouse/``)."""
    from edgeship.agent.runtimes.process import unpack_bundle

    parts = _parts(manifest)
    unpack_bundle(part_file(module_dir, parts.source, manifest), dest, wheelhouse=False)
    if wheelhouse:
        (dest / "wheelhouse").mkdir(exist_ok=True)
        for wheel in parts.wheels:
            source = part_file(module_dir, Part(wheel.digest, wheel.size), manifest)
            target = dest / "wheelhouse" / wheel.name
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    root = dest.resolve()
    for model in parts.models:
        target = dest / model.path
        if not target.resolve().is_relative_to(root):
            raise RuntimeFailure(f"Model path {model.path!r} of module {manifest.ref} leaves its folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        whole = hashlib.sha256()
        with target.open("wb") as out:
            for chunk in model.chunks:
                with part_file(module_dir, chunk, manifest).open("rb") as handle:
                    _copy(handle, out, whole)
        if "sha256:" + whole.hexdigest() != model.digest:
            raise RuntimeFailure(
                f"Model file {model.path} of module {manifest.ref} does not match its signed digest once assembled; "
                "re-package the module."
            )


def _copy(handle: IO[bytes], out: IO[bytes], sha: hashlib._Hash | None = None) -> None:
    for data in iter(lambda: handle.read(_COPY), b""):
        out.write(data)
        if sha is not None:
            sha.update(data)


def present_layers(diff_ids: list[str], images_layers: list[list[str]]) -> int:
    """How many of ``diff_ids``' leading layers the engine has: the longest prefix some image shares.

    A layer exists in an engine as a chain (it and every layer below it), so a layer is
    present only together with the same layers below it; pure, for the tests.
    """
    best = 0
    for layers in images_layers:
        shared = 0
        for mine, theirs in zip(diff_ids, layers, strict=False):
            if mine != theirs:
                break
            shared += 1
        best = max(best, shared)
    return best


def write_load_archive(module_dir: Path, manifest: ModuleManifest, out: IO[bytes], skip: int) -> None:
    """The ``docker load`` tar of the module's image, without its first ``skip`` layers (the engine has them)."""
    parts = _parts(manifest)
    if parts.image is None or manifest.image is None:
        raise RuntimeFailure(f"Module {manifest.ref} has no image parts; re-package it with an image.")
    config = parts.image.config
    config_name = config.digest.removeprefix("sha256:") + ".json"
    layer_names = [f"{layer.digest.removeprefix('sha256:')}/layer.tar" for layer in parts.image.layers]
    index = [{"Config": config_name, "RepoTags": [manifest.image.tag], "Layers": layer_names}]
    import tarfile  # only a Docker install writes it: not held by the idle agent (ADR 0030)

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "manifest.json", path=None, data=json.dumps(index).encode())
        _add(tar, config_name, path=part_file(module_dir, config, manifest))
        for layer, name in list(zip(parts.image.layers, layer_names, strict=True))[skip:]:
            _add(tar, name, path=part_file(module_dir, layer, manifest))


def _add(tar: tarfile.TarFile, name: str, *, path: Path | None, data: bytes | None = None) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.mode = 0o644
    if path is None:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    info.size = path.stat().st_size
    with path.open("rb") as handle:
        tar.addfile(info, handle)
