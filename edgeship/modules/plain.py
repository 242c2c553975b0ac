"""The module manifest's rules, checked without pydantic: what the agent reads ``module.json`` with.

One definition of the manifest (``docs/module-manifest.md``): these functions state
what a valid ``module.json`` is, and both sides use them. The agent parses with
:func:`parse_manifest` into plain frozen records (:mod:`edgeship.records`; the names and attributes of
:mod:`edgeship.modules.manifest`'s pydantic models), so its process holds no pydantic
(``docs/agent.md``: Footprint). The packager and the hub keep the pydantic model for
building and serialising, and its ``from_bytes`` runs :func:`check_manifest` first, so it
never accepts what an agent refuses; ``tests/modules/test_one_definition.py`` feeds a
corpus of valid and invalid manifests to both and checks they agree, value for value.

JSON types are taken as they are (an int is an int, never ``"3"`` or ``true``), unknown
keys are refused, and each key may be given by its JSON name or its Python name
(pydantic's ``populate_by_name``), never both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from edgeship.errors import ManifestError
from edgeship.records import field, record

__all__ = [
    "ENVELOPE_FILE",
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "ArtifactRef",
    "BundleRef",
    "EnvironmentRef",
    "ImageParts",
    "ImageRef",
    "ModelPart",
    "ModelPin",
    "ModuleManifest",
    "Part",
    "Parts",
    "Resources",
    "WheelPart",
    "check_manifest",
    "parse_manifest",
]

SCHEMA_VERSION = 2  # what the packager writes: artifacts as content-addressed parts (ADR 0028)
SCHEMA_VERSIONS = (1, 2)  # what is read; a manifest without schemaVersion is version 1
MIN_CHUNK, MAX_CHUNK = 64 * 1024, 64 * 1024 * 1024  # bytes: the bounds of parts.chunkSize
MANIFEST_FILE = "module.json"
ENVELOPE_FILE = "module.dsse.json"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # matched whole
ACCELERATORS = ("none", "gpu", "fpga")


class InvalidField(ValueError):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


@record
class ArtifactRef:
    path: str
    digest: str
    size: int


@record
class ModelPin:
    name: str
    version: int
    digest: str
    framework: str = "custom"


@record
class EnvironmentRef:
    lock_digest: str
    python: str
    requirements: list[str] = field(default_factory=list)


@record
class BundleRef:
    digest: str
    size: int
    path: str = "bundle.tar"


@record
class ImageRef:
    id: str
    tag: str
    base_image: str
    archive: ArtifactRef | None = None


@record
class Resources:
    cpu: float | None = None
    memory_gb: float | None = None
    cpu_limit: float | None = None
    memory_gb_limit: float | None = None
    accelerator: str = "none"


@record
class Part:
    """One content-addressed part: the agent fetches it by digest and checks it against both fields."""

    digest: str
    size: int


@record
class WheelPart:
    name: str  # the wheel's file name in wheelhouse/
    digest: str
    size: int


@record
class ModelPart:
    """A model file (``path`` in the bundle's layout) as consecutive chunks of ``chunkSize`` bytes."""

    path: str
    digest: str
    size: int
    chunks: list[Part]


@record
class ImageParts:
    """The image as ``docker load`` needs it: the config (its digest is the image id) and the layer tars.

    A layer's digest is its diff id (sha256 of the uncompressed layer tar), in RootFS order."""

    config: Part
    layers: list[Part]


@record
class Parts:
    """Schema version 2: what a device fetches instead of the bundle (``docs/module-manifest.md``)."""

    chunk_size: int
    source: Part
    wheels: list[WheelPart]
    models: list[ModelPart]
    image: ImageParts | None = None

    def all(self) -> list[Part]:
        """Every part once, in manifest order (two equal wheels or chunks are one part)."""
        seen: dict[str, Part] = {}
        for part in self.for_process() + self.for_image():
            seen.setdefault(part.digest, part)
        return list(seen.values())

    def for_process(self) -> list[Part]:
        wheels = [Part(w.digest, w.size) for w in self.wheels]
        return [self.source, *wheels, *(c for m in self.models for c in m.chunks)]

    def for_image(self) -> list[Part]:
        return [] if self.image is None else [self.image.config, *self.image.layers]


@record
class ModuleManifest:
    name: str
    version: int
    models: list[ModelPin]
    environment: EnvironmentRef
    bundle: BundleRef
    files: list[ArtifactRef]
    schema_version: int = 1
    variant: str = "fp32"
    target: str = "local"
    entry_script: str | None = None
    source_dir: str | None = None
    image: ImageRef | None = None
    resources: Resources = field(default_factory=Resources)
    ports: list[int] = field(default_factory=lambda: [5001])
    auth_enabled: bool = False
    openapi_digest: str | None = None
    execution_providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    parts: Parts | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


# --- the field checks, shared with edgeship.deployment ---------------------------------------

_MISSING: Any = object()


class Fields:
    """Reads one JSON object: each key once (JSON or Python name), none unknown."""

    def __init__(self, obj: Any, where: str, names: Mapping[str, str]) -> None:
        """``names`` maps each Python name to its JSON name (the same when there is no alias)."""
        if not isinstance(obj, dict):
            raise InvalidField(where, "must be a JSON object")
        self.obj, self.where = obj, where
        self.values: dict[str, Any] = {}
        for python, alias in names.items():
            given = [k for k in dict.fromkeys((alias, python)) if k in obj]
            if len(given) > 1:
                raise InvalidField(self._at(alias), f"given both as {alias!r} and as {python!r}")
            self.values[python] = obj[given[0]] if given else _MISSING
        known = set(names) | set(names.values())
        unknown = sorted(k for k in obj if k not in known)
        if unknown:
            raise InvalidField(self._at(unknown[0]), "unknown key (extra keys are not allowed)")
        self.aliases = dict(names)

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def here(self, python: str) -> str:
        return self._at(self.aliases[python])

    def get(self, python: str, check: Any, default: Any = _MISSING) -> Any:
        value = self.values[python]
        if value is _MISSING:
            if default is _MISSING:
                raise InvalidField(self.here(python), "field required")
            return default
        return check(value, self.here(python))


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidField(where, "must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidField(where, "must be valid Unicode text") from exc
    return value


def optional(check: Any) -> Any:
    return lambda value, where: None if value is None else check(value, where)


def integer(low: int | None = None, high: int | None = None) -> Any:
    def check(value: Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidField(where, "must be an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidField(where, f"must be between {low} and {high}")
        return value

    return check


def number(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidField(where, "must be a finite number")
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidField(where, "must be true or false")
    return value


def digest(value: Any, where: str) -> str:
    if not DIGEST.fullmatch(text(value, where)):
        raise InvalidField(where, "must be 'sha256:' and 64 lowercase hex digits")
    return str(value)


def listing(check: Any) -> Any:
    def each(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidField(where, "must be a list")
        return [check(item, f"{where}.{i}") for i, item in enumerate(value)]

    return each


def one_of(*allowed: str) -> Any:
    def check(value: Any, where: str) -> str:
        if value not in allowed or not isinstance(value, str):
            raise InvalidField(where, "must be one of " + ", ".join(repr(a) for a in allowed))
        return str(value)

    return check


# --- the manifest --------------------------------------------------------------------------


def _artifact(obj: Any, where: str) -> ArtifactRef:
    f = Fields(obj, where, {"path": "path", "digest": "digest", "size": "size"})
    path = f.get("path", text)
    if path.startswith("/") or ".." in path.split("/") or not path:
        raise InvalidField(f.here("path"), f"artifact path {path!r} must be relative and stay inside the module")
    return ArtifactRef(path, f.get("digest", digest), f.get("size", integer(0)))


def _model(obj: Any, where: str) -> ModelPin:
    f = Fields(obj, where, {"name": "name", "version": "version", "digest": "digest", "framework": "framework"})
    return ModelPin(f.get("name", text), f.get("version", integer(1)), f.get("digest", digest),
                    f.get("framework", text, "custom"))  # fmt: skip


def _environment(obj: Any, where: str) -> EnvironmentRef:
    f = Fields(obj, where, {"lock_digest": "lockDigest", "python": "python", "requirements": "requirements"})
    return EnvironmentRef(f.get("lock_digest", digest), f.get("python", text), f.get("requirements", listing(text), []))


def _bundle(obj: Any, where: str) -> BundleRef:
    f = Fields(obj, where, {"path": "path", "digest": "digest", "size": "size"})
    return BundleRef(f.get("digest", digest), f.get("size", integer(0)), f.get("path", text, "bundle.tar"))


def _image(obj: Any, where: str) -> ImageRef:
    f = Fields(obj, where, {"id": "id", "tag": "tag", "base_image": "baseImage", "archive": "archive"})
    return ImageRef(f.get("id", text), f.get("tag", text), f.get("base_image", text),
                    f.get("archive", optional(_artifact), None))  # fmt: skip


def _resources(obj: Any, where: str) -> Resources:
    f = Fields(obj, where, {"cpu": "cpu", "memory_gb": "memoryInGB", "cpu_limit": "cpuLimit",
                            "memory_gb_limit": "memoryInGBLimit", "accelerator": "accelerator"})  # fmt: skip
    value = optional(number)
    return Resources(f.get("cpu", value, None), f.get("memory_gb", value, None), f.get("cpu_limit", value, None),
                     f.get("memory_gb_limit", value, None),
                     f.get("accelerator", one_of(*ACCELERATORS), "none"))  # fmt: skip


def _schema(value: Any, where: str) -> int:
    version = integer()(value, where)
    if version not in SCHEMA_VERSIONS:
        raise InvalidField(where, f"schemaVersion {version} is not supported (this edgeship reads 1 and 2)")
    return int(version)


def _part(obj: Any, where: str) -> Part:
    f = Fields(obj, where, {"digest": "digest", "size": "size"})
    return Part(f.get("digest", digest), f.get("size", integer(0)))


def file_name(value: Any, where: str) -> str:
    name = text(value, where)
    if not name.endswith(".whl") or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidField(where, f"wheel name {name!r} must be a '.whl' file name without folders")
    return name


def model_path(value: Any, where: str) -> str:
    path = text(value, where)
    parts = path.split("/")
    if parts[0] != "azureml-models" or len(parts) < 4 or any(p in ("", ".", "..") for p in parts):
        raise InvalidField(where, f"model path {path!r} must be a file under azureml-models/<name>/<version>/")
    return path


def check_chunks(size: int, chunks: list[Any], chunk_size: int) -> str | None:
    """Why ``chunks`` do not cut a file of ``size`` bytes into ``chunk_size`` pieces; None if they do."""
    if sum(c.size for c in chunks) != size:
        return "the chunks' sizes must add up to the file's size"
    if any(c.size != chunk_size for c in chunks[:-1]) or (chunks and not 0 < chunks[-1].size <= chunk_size):
        return "every chunk but the last must be chunkSize bytes, the last 1 to chunkSize"
    return None


def _wheel(obj: Any, where: str) -> WheelPart:
    f = Fields(obj, where, {"name": "name", "digest": "digest", "size": "size"})
    return WheelPart(f.get("name", file_name), f.get("digest", digest), f.get("size", integer(0)))


def _image_parts(obj: Any, where: str) -> ImageParts:
    f = Fields(obj, where, {"config": "config", "layers": "layers"})
    return ImageParts(f.get("config", _part), f.get("layers", listing(_part)))


def _parts(obj: Any, where: str) -> Parts:
    f = Fields(obj, where, {"chunk_size": "chunkSize", "source": "source", "wheels": "wheels",
                            "models": "models", "image": "image"})  # fmt: skip
    chunk_size = f.get("chunk_size", integer(MIN_CHUNK, MAX_CHUNK))

    def model(item: Any, at: str) -> ModelPart:
        m = Fields(item, at, {"path": "path", "digest": "digest", "size": "size", "chunks": "chunks"})
        found = ModelPart(m.get("path", model_path), m.get("digest", digest), m.get("size", integer(0)),
                          m.get("chunks", listing(_part)))  # fmt: skip
        problem = check_chunks(found.size, found.chunks, chunk_size)
        if problem:
            raise InvalidField(m.here("chunks"), problem)
        return found

    models = f.get("models", listing(model))
    paths = [m.path for m in models]
    if len(set(paths)) != len(paths):
        raise InvalidField(f.here("models"), "a model path is listed twice")
    wheels = f.get("wheels", listing(_wheel))
    if len({w.name for w in wheels}) != len(wheels):
        raise InvalidField(f.here("wheels"), "a wheel name is listed twice")
    return Parts(chunk_size, f.get("source", _part), wheels, models, f.get("image", optional(_image_parts), None))


def check_versioned(schema_version: int, parts: Any, image: Any) -> str | None:
    """Why ``parts`` does not fit the schema version (and the image); None when it does. Shared with pydantic."""
    if schema_version == 1 and parts is not None:
        return "parts needs schemaVersion 2"
    if schema_version >= 2 and parts is None:
        return "schemaVersion 2 needs parts"
    if parts is not None and parts.image is not None and image is None:
        return "parts.image needs an image"
    return None


_MANIFEST_KEYS = {
    "schema_version": "schemaVersion", "name": "name", "version": "version", "variant": "variant",
    "target": "target", "models": "models", "entry_script": "entryScript", "source_dir": "sourceDirectory",
    "environment": "environment", "bundle": "bundle", "image": "image", "resources": "resources", "ports": "ports",
    "auth_enabled": "authEnabled", "openapi_digest": "openapiDigest", "execution_providers": "executionProviders",
    "files": "files", "parts": "parts",
}  # fmt: skip


def _manifest(obj: Any) -> ModuleManifest:
    f = Fields(obj, "", _MANIFEST_KEYS)
    manifest = _fields(f)
    problem = check_versioned(manifest.schema_version, manifest.parts, manifest.image)
    if problem:
        raise InvalidField(f.here("parts"), problem)
    return manifest


def _fields(f: Fields) -> ModuleManifest:
    return ModuleManifest(
        schema_version=f.get("schema_version", _schema, 1),
        name=f.get("name", text),
        version=f.get("version", integer(1)),
        variant=f.get("variant", text, "fp32"),
        target=f.get("target", text, "local"),
        models=f.get("models", listing(_model)),
        entry_script=f.get("entry_script", optional(text), None),
        source_dir=f.get("source_dir", optional(text), None),
        environment=f.get("environment", _environment),
        bundle=f.get("bundle", _bundle),
        image=f.get("image", optional(_image), None),
        resources=f.get("resources", _resources, Resources()),
        ports=f.get("ports", listing(integer()), [5001]),
        auth_enabled=f.get("auth_enabled", boolean, False),
        openapi_digest=f.get("openapi_digest", optional(digest), None),
        execution_providers=f.get("execution_providers", listing(text), ["CPUExecutionProvider"]),
        files=f.get("files", listing(_artifact)),
        parts=f.get("parts", optional(_parts), None),
    )


def load_json(data: bytes, what: str) -> Any:
    """JSON with no duplicate keys and no NaN or Infinity (parsers would differ on either)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen = [k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])]
            raise ValueError(f"key {seen[0]!r} appears twice")
        return obj

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}.") from exc


def parse_manifest(data: bytes, source: str = MANIFEST_FILE) -> ModuleManifest:
    """``module.json`` bytes as a :class:`ModuleManifest`, or :class:`ManifestError` naming the first problem."""
    obj = load_json(data, source)
    try:
        return _manifest(obj)
    except InvalidField as exc:
        raise ManifestError(f"{source} is not a valid module manifest: {exc.where or '(top level)'}: {exc}.") from None


def check_manifest(data: bytes, source: str = MANIFEST_FILE) -> None:
    """Raise :class:`ManifestError` unless ``data`` is a valid manifest (the pydantic model calls this first)."""
    parse_manifest(data, source)
