"""The module manifest (``module.json``): what the packager built, pinned by digest.

A module directory holds ``module.json``, its signed envelope ``module.dsse.json``
and artifacts (``bundle.tar``, ``image.tar``, ``targets/...``). ``files`` lists every
artifact with its digest, so a signature over the manifest covers the whole
directory. The manifest carries no timestamps and no secrets: the same inputs give
the same manifest bytes.

Schema version 1 fields are documented in ``docs/module-manifest.md``. The rules of a
valid ``module.json`` are stated once, without pydantic, in :mod:`edgeship.modules.plain`
(what agents parse with); :meth:`ModuleManifest.from_bytes` runs them first, so nothing
here accepts a manifest an agent refuses.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeship.errors import ManifestError
from edgeship.modules.plain import (
    ENVELOPE_FILE,
    MANIFEST_FILE,
    MAX_CHUNK,
    MIN_CHUNK,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    check_chunks,
    check_manifest,
    check_versioned,
    file_name,
    model_path,
)

__all__ = [
    "ENVELOPE_FILE",
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
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
]

_DIGEST = r"^sha256:[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ArtifactRef(_Strict):
    """One file of the module directory, relative to it (posix path)."""

    path: str
    digest: str = Field(pattern=_DIGEST)
    size: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/") or not value:
            raise ValueError(f"artifact path {value!r} must be relative and stay inside the module")
        return value


class ModelPin(_Strict):
    name: str
    version: int = Field(ge=1)
    digest: str = Field(pattern=_DIGEST)
    framework: str = "custom"


class EnvironmentRef(_Strict):
    """The resolved environment; agents reuse a venv across modules with the same lock digest."""

    lock_digest: str = Field(alias="lockDigest", pattern=_DIGEST)
    python: str
    requirements: list[str] = Field(default_factory=list)


class BundleRef(_Strict):
    path: str = "bundle.tar"
    digest: str = Field(pattern=_DIGEST)
    size: int = Field(ge=0)


class ImageRef(_Strict):
    """The container image, when one was built: the id is the config digest docker reports."""

    id: str
    tag: str
    base_image: str = Field(alias="baseImage")
    archive: ArtifactRef | None = None


class Part(_Strict):
    digest: str = Field(pattern=_DIGEST)
    size: int = Field(ge=0)


class WheelPart(_Strict):
    name: str
    digest: str = Field(pattern=_DIGEST)
    size: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        return file_name(value, "name")


class ModelPart(_Strict):
    path: str
    digest: str = Field(pattern=_DIGEST)
    size: int = Field(ge=0)
    chunks: list[Part]

    @field_validator("path")
    @classmethod
    def _model_path(cls, value: str) -> str:
        return model_path(value, "path")


class ImageParts(_Strict):
    config: Part
    layers: list[Part]


class Parts(_Strict):
    """Schema version 2's parts; the rules are :mod:`edgeship.modules.plain`'s (``Parts``)."""

    chunk_size: int = Field(alias="chunkSize", ge=MIN_CHUNK, le=MAX_CHUNK)
    source: Part
    wheels: list[WheelPart]
    models: list[ModelPart]
    image: ImageParts | None = None

    def all(self) -> list[Part]:
        """Every part once, in manifest order (as the plain ``Parts.all``)."""
        seen: dict[str, Part] = {}
        wheels = [Part(digest=w.digest, size=w.size) for w in self.wheels]
        chunks = [c for m in self.models for c in m.chunks]
        image = [] if self.image is None else [self.image.config, *self.image.layers]
        for part in [self.source, *wheels, *chunks, *image]:
            seen.setdefault(part.digest, part)
        return list(seen.values())

    @model_validator(mode="after")
    def _consistent(self) -> Parts:
        for model in self.models:
            problem = check_chunks(model.size, model.chunks, self.chunk_size)
            if problem:
                raise ValueError(problem)
        if len({m.path for m in self.models}) != len(self.models):
            raise ValueError("a model path is listed twice")
        if len({w.name for w in self.wheels}) != len(self.wheels):
            raise ValueError("a wheel name is listed twice")
        return self


class Resources(_Strict):
    cpu: float | None = None
    memory_gb: float | None = Field(default=None, alias="memoryInGB")
    cpu_limit: float | None = Field(default=None, alias="cpuLimit")
    memory_gb_limit: float | None = Field(default=None, alias="memoryInGBLimit")
    accelerator: Literal["none", "gpu", "fpga"] = "none"


class ModuleManifest(_Strict):
    schema_version: int = Field(default=1, alias="schemaVersion")
    name: str
    version: int = Field(ge=1)
    variant: str = "fp32"
    target: str = "local"
    models: list[ModelPin]
    entry_script: str | None = Field(default=None, alias="entryScript")
    source_dir: str | None = Field(default=None, alias="sourceDirectory")
    environment: EnvironmentRef
    bundle: BundleRef
    image: ImageRef | None = None
    resources: Resources = Field(default_factory=Resources)
    ports: list[int] = Field(default_factory=lambda: [5001])
    auth_enabled: bool = Field(default=False, alias="authEnabled")
    openapi_digest: str | None = Field(default=None, alias="openapiDigest", pattern=_DIGEST)
    execution_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], alias="executionProviders")
    files: list[ArtifactRef]
    parts: Parts | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value not in SCHEMA_VERSIONS:
            raise ValueError(f"schemaVersion {value} is not supported (this edgeship reads 1 and 2)")
        return value

    @model_validator(mode="after")
    def _parts_fit_version(self) -> ModuleManifest:
        problem = check_versioned(self.schema_version, self.parts, self.image)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace variance, so signatures are stable."""
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "module.json") -> ModuleManifest:
        check_manifest(data, source)
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ManifestError(f"{source} is not a valid module manifest: {where}: {first['msg']}.") from exc
