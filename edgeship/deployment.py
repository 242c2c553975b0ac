"""The deployment document: what one device must run now, as the hub signs it.

The second of the two signed documents (``docs/deployments.md``): the hub builds
one per device from the layering rule, signs it with a ``hub`` key (DSSE,
:data:`edgeship.signing.DEPLOYMENT_PAYLOAD_TYPE`) and publishes it retained on
``edgeship/v1/devices/{id}/desired``. It embeds each module's *release-signed*
manifest envelope, so a device trusts a module only when both the hub (this
device, this sequence) and a release key (this build) vouch for it.

Invariants the model enforces on every parse:

- ``schemaVersion`` is 1 (anything else is :class:`SchemaVersionError`, reported
  as 412 so an old agent says "upgrade me" rather than "bad document");
- ``1 <= sequence <= MAX_SEQUENCE`` and ``expires > issuedAt``, both UTC with a ``Z``;
- a module's ``settings`` are only the inert allow-list (:class:`ModuleSettings`): a
  port and a restart policy. Nothing the hub signs may decide what code runs
  (environment, command, container options): that is the release-signed manifest's
  alone (``docs/security.md``);
- module names are usable as service names and distinct ignoring case;
- each ``module`` is a structurally valid DSSE envelope (trust is checked later,
  by ``edgeship.agent.decide.accept``);
- the whole document is at most :data:`MAX_DOCUMENT_BYTES`, checked before parsing.

No I/O and no clock here: the caller passes ``issued_at``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from edgeship.errors import EnvelopeError, ManifestError

if TYPE_CHECKING:
    from edgeship.signing import Envelope, SignerLike

__all__ = [
    "DEFAULT_TTL",
    "MAX_DOCUMENT_BYTES",
    "MAX_SEQUENCE",
    "SCHEMA_VERSION",
    "DeploymentDocument",
    "DocumentTooLargeError",
    "ModuleBlobs",
    "ModuleEntry",
    "ModuleSettings",
    "RestartPolicy",
    "SchemaVersionError",
    "build_document",
    "format_time",
    "sign_document",
]

SCHEMA_VERSION = 1
MAX_DOCUMENT_BYTES = 1024 * 1024  # bytes, of the signed envelope; larger ones are refused unread
MAX_SEQUENCE = 2**31 - 1  # the highest sequence a hub issues or an agent accepts (a signed 32-bit column)
DEFAULT_TTL = timedelta(days=7)  # how long a device may keep applying a document it cannot refresh
_MODULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$"  # leaves room for a blue/green slot suffix

RestartPolicy = Literal["always", "on-failure", "never"]


class DocumentTooLargeError(ManifestError):
    """A deployment document is over :data:`MAX_DOCUMENT_BYTES`; it was not parsed."""


class SchemaVersionError(ManifestError):
    """A deployment document has a schemaVersion this edgeship does not read."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class ModuleBlobs(_Strict):
    """Where to fetch the artifacts. Untrusted locations: their digests come from the manifest."""

    bundle: str
    image: str | None = None

    @field_validator("bundle", "image")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://", "/")):
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


def format_time(value: datetime) -> str:
    """The one time format of edgeship documents: ISO 8601, UTC, seconds, ``Z``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeploymentDocument(_Strict):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    device_id: str = Field(alias="deviceId", min_length=1, max_length=128)
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
            if not re.match(_MODULE_NAME, name):
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
        """Parse a (verified) payload: size, then JSON, then schemaVersion, then every field."""
        if len(data) > MAX_DOCUMENT_BYTES:
            raise DocumentTooLargeError(
                f"Deployment document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit."
            )
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"Deployment document is not valid JSON: {exc}.") from exc
        if not isinstance(obj, dict):
            raise ManifestError("Deployment document must be a JSON object.")
        version = obj.get("schemaVersion")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise SchemaVersionError(
                f"Deployment document schemaVersion {version!r} is not supported (this agent reads "
                f"{SCHEMA_VERSION}); upgrade the agent."
            )
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
