"""Parts: a module's bundle and image archive cut into content-addressed pieces (schemaVersion 2, ADR 0028).

The parts are derived from the finished artifacts, so they hold exactly the bytes the
bundle and image hold, and a device that assembles them gets what the bundle would
have given it:

- **source**: one deterministic tar of ``requirements.lock`` and ``src/`` (the bundle's
  own entries, in their order, with their normalised headers);
- **wheels**: each ``wheelhouse/*.whl`` as it is, so two modules with the same wheel
  share one part;
- **models**: each file under ``azureml-models/`` in chunks of ``chunk_size`` bytes, so a
  partly changed file moves only the chunks that changed;
- **image**: the image config (its digest is the image id) and each layer tar of the
  ``docker save`` archive (its digest is the layer's diff id).

Each part is written once as ``parts/<hex>`` beside the bundle (atomically, by
temporary file and rename), and listed in the manifest's ``parts`` with digest and size.
``bundle.json`` is not a part: it only describes the bundle, and would change with
every model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from edgeship.errors import PackagingError
from edgeship.modules.manifest import ImageParts, ModelPart, Part, Parts, WheelPart

__all__ = ["CHUNK_SIZE", "PARTS_DIR", "build_parts", "image_parts"]

CHUNK_SIZE = 4 * 1024 * 1024  # bytes per model chunk: a changed byte costs at most this much
PARTS_DIR = "parts"
_COPY = 1 << 20  # bytes per read


class _PartWriter:
    """Writes parts into ``folder`` by digest, each once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put_bytes(self, data: bytes) -> Part:
        return self._put(iter([data]))

    def put_stream(self, handle: IO[bytes]) -> Part:
        return self._put(iter(lambda: handle.read(_COPY), b""))

    def _put(self, chunks: Iterator[bytes]) -> Part:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".part-")
        sha, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for data in chunks:
                    out.write(data)
                    sha.update(data)
                    size += len(data)
            final = self.folder / sha.hexdigest()
            if final.exists():
                os.unlink(tmp)
            else:
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return Part(digest="sha256:" + sha.hexdigest(), size=size)


def build_parts(bundle: Path, folder: Path, *, chunk_size: int = CHUNK_SIZE) -> Parts:
    """The bundle's parts, written into ``folder`` (``parts/`` of the module directory)."""
    writer = _PartWriter(folder)
    wheels: list[WheelPart] = []
    models: list[ModelPart] = []
    with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as source_tar:
        with tarfile.open(bundle, mode="r:") as tar, tarfile.open(
            fileobj=source_tar, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
        ) as source:
            for member in tar:
                top = PurePosixPath(member.name).parts[0]
                handle = tar.extractfile(member) if member.isfile() else None
                if top in ("requirements.lock", "src"):
                    source.addfile(member, handle)
                elif top == "wheelhouse" and handle is not None:
                    part = writer.put_stream(handle)
                    wheels.append(WheelPart(name=PurePosixPath(member.name).name, digest=part.digest, size=part.size))
                elif top == "azureml-models" and handle is not None:
                    models.append(_model_part(writer, member, handle, chunk_size))
        source_tar.seek(0)
        source_part = writer.put_stream(source_tar)
    return Parts(chunkSize=chunk_size, source=source_part, wheels=wheels, models=models)


def _model_part(writer: _PartWriter, member: tarfile.TarInfo, handle: IO[bytes], chunk_size: int) -> ModelPart:
    whole = hashlib.sha256()
    chunks: list[Part] = []
    left = member.size
    while left > 0:
        data = handle.read(min(chunk_size, left))
        if not data:
            raise PackagingError(f"{member.name} ended early in the bundle; re-package the module.")
        whole.update(data)
        chunks.append(writer.put_bytes(data))
        left -= len(data)
    return ModelPart(path=member.name, digest="sha256:" + whole.hexdigest(), size=member.size, chunks=chunks)


def image_parts(archive: Path, folder: Path, image_id: str) -> ImageParts:
    """The config and layer tars of a ``docker save`` archive (legacy or OCI layout), written into ``folder``.

    The config's digest must be ``image_id`` and each layer's its diff id in the config's
    ``rootfs``: the engine checks both when it loads what a device assembles from them.
    """
    writer = _PartWriter(folder)
    with tarfile.open(archive, mode="r:") as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        if len(manifest) != 1:
            raise PackagingError(f"{archive.name} holds {len(manifest)} images; an image archive holds one.")
        entry = manifest[0]
        config_file = _member(tar, entry["Config"])
        config = writer.put_stream(config_file)
        if config.digest != image_id:
            raise PackagingError(f"{archive.name}'s config is {config.digest[:19]}…, not image {image_id[:19]}….")
        diff_ids = json.loads((folder / config.digest.removeprefix("sha256:")).read_bytes())["rootfs"]["diff_ids"]
        layers = []
        for name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            layer = writer.put_stream(_member(tar, name))
            if layer.digest != diff_id:
                raise PackagingError(f"layer {name} of {archive.name} does not hash to its diff id {diff_id[:19]}….")
            layers.append(layer)
    return ImageParts(config=config, layers=layers)


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = tar.extractfile(name)
    if handle is None:
        raise PackagingError(f"the image archive has no file {name}; re-build the image.")
    return handle
