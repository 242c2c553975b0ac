"""The deployment document as pydantic models: what the hub builds, validates settings with and signs.

The rules of a valid document are stated once, in :mod:`edgeship.deployment`
(without pydantic, which is what agents parse with); these models mirror them for
building and serialising, and :meth:`DeploymentDocument.from_bytes` runs
:func:`edgeship.deployment.parse_document` first, so the hub never accepts a document
an agent refuses (``tests/modules/test_one_definition.py`` checks the other direction
on a corpus). Import the names from :mod:`edgeship.deployment`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from edgeship.deployment import (
    BLOB_PREFIXES,
    DEFAULT_TTL,
    MAX_DEVICE_ID,
    MAX_SEQUENCE,
    MODULE_NAME,
    SCHEMA_VERSION,
    RestartPolicy,
    format_time,
    parse_document,
)
from edgeship.errors import EnvelopeError, ManifestError

if TYPE_CHECKING:
    from edgeship.signing import Envelope, SignerLike

__all__ = [
    "DEFAULT_TTL",
    "DeploymentDocument",
    "ModuleBlobs",
    "ModuleEntry",
    "ModuleSettings",
    "build_document",
    "sign_document",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class ModuleBlobs(_Strict):
    """Where to fetch the artifacts. Untrusted locations: their digests come from the manifest."""

    bundle: str
    image: str | None = None

    @field_validator("bundle", "image")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(BLOB_PREFIXES):
            raise ValueError(f"blob location {value!r} must be an http(s) URL or a path on the hub ('/blobs/...')")
        return value


class ModuleSettings(_Strict):
    """How the device runs the module: per device, so hub-signed, so *inert* by construction.

    The allow-list is exactly ``port`` and ``restartPolicy``: neither changes what code
    runs. A hub key or an operator token decides only which release-signed module a
    device runs, and when; environment variables, the command and container options
    would let either run code of its own choosing (``LD_PRELOAD``, ``PYTHONPATH``, a
    bind mount...), so only a release key may set them, in the module it signs.

    ``env`` stays in the model for compatibility: hubs before the trust split wrote
    ``"env": {}`` into every document, and agents in the field require the key's
    model to know it. It must be empty; anything in it is refused, by the hub when a
    deployment is created and again by the agent (status 400, nothing started), so a
    hostile hub key gains nothing. Any other key is refused as unknown.
    """

    port: int | None = Field(default=None, ge=1, le=65535)
    restart_policy: RestartPolicy = Field(default="on-failure", alias="restartPolicy")
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _no_environment(cls, value: dict[str, str]) -> dict[str, str]:
        if value:
            names = ", ".join(sorted(value)[:5])
            raise ValueError(
                f"environment variables ({names}) cannot be set by a deployment: they decide what code runs, "
                "so only the release-signed module may decide them; remove settings.env from the deployment"
            )
        return value


class ModuleEntry(_Strict):
    module: dict[str, Any]  # the module manifest's DSSE envelope, as a JSON object
    blobs: ModuleBlobs
    settings: ModuleSettings = Field(default_factory=ModuleSettings)

    @field_validator("module")
    @classmethod
    def _envelope_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        from edgeship.signing.dsse import Envelope

        try:
            Envelope.from_dict(value)
        except EnvelopeError as exc:
            raise ValueError(str(exc)) from exc
        return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ValueError("times must be UTC with a 'Z' (e.g. 2025-01-01T00:00:00Z)")
    return value.astimezone(timezone.utc)


class DeploymentDocument(_Strict):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    device_id: str = Field(alias="deviceId", min_length=1, max_length=MAX_DEVICE_ID)
    sequence: int = Field(ge=1, le=MAX_SEQUENCE)
    issued_at: datetime = Field(alias="issuedAt")
    expires: datetime
    modules: dict[str, ModuleEntry] = Field(default_factory=dict)
    deployments: list[str] = Field(default_factory=list)

    @field_validator("issued_at", "expires")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: dict[str, ModuleEntry]) -> dict[str, ModuleEntry]:
        import re

        seen: set[str] = set()
        for name in value:
            if not re.match(MODULE_NAME, name):
                raise ValueError(f"module name {name!r} must be 1-48 letters, digits, '.', '_' or '-'")
            if name.lower() in seen:
                raise ValueError(f"module names differ only in case ({name!r}); one device runs one of them")
            seen.add(name.lower())
        return value

    @model_validator(mode="after")
    def _expires_after_issue(self) -> DeploymentDocument:
        if self.expires <= self.issued_at:
            raise ValueError("expires must be later than issuedAt")
        return self

    @field_serializer("issued_at", "expires")
    def _time_text(self, value: datetime) -> str:
        return format_time(value)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, compact): equal documents are equal bytes."""
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> DeploymentDocument:
        """Parse a (verified) payload: :func:`~edgeship.deployment.parse_document`'s checks, then the model's."""
        parse_document(data)  # the rules, as agents check them (size, JSON, schemaVersion, every field)
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ManifestError(f"Deployment document is not valid: {where}: {first['msg']}.") from exc


def build_document(
    *,
    device_id: str,
    sequence: int,
    modules: Mapping[str, ModuleEntry],
    deployments: Iterable[str] = (),
    issued_at: datetime,
    ttl: timedelta = DEFAULT_TTL,
) -> DeploymentDocument:
    """The document the hub signs for one device; ``issued_at`` is truncated to whole seconds.

    The hub owns ``sequence``: strictly increasing per device, never reused, even
    when the module set does not change (a re-issue to extend the expiry).
    """
    issued = issued_at.astimezone(timezone.utc).replace(microsecond=0)
    try:
        return DeploymentDocument(
            deviceId=device_id,
            sequence=sequence,
            issuedAt=issued,
            expires=issued + ttl,
            modules=dict(modules),
            deployments=sorted(set(deployments)),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ManifestError(f"Cannot build a deployment document: {where}: {first['msg']}.") from exc


def sign_document(document: DeploymentDocument, signers: Iterable[SignerLike]) -> Envelope:
    """Wrap ``document`` in a DSSE envelope signed by ``signers`` (the hub's keys)."""
    from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, sign_envelope

    return sign_envelope(document.to_bytes(), DEPLOYMENT_PAYLOAD_TYPE, signers)
