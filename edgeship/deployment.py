"""The deployment document: what one device must run now, as the hub signs it.

The second of the two signed documents (``docs/deployments.md``): the hub builds
one per device from the layering rule, signs it with a ``hub`` key (DSSE,
:data:`edgeship.signing.DEPLOYMENT_PAYLOAD_TYPE`) and publishes it retained on
``edgeship/v1/devices/{id}/desired``. It embeds each module's *release-signed*
manifest envelope, so a device trusts a module only when both the hub (this
device, this sequence) and a release key (this build) vouch for it.

This module is the one definition of a valid document, without pydantic:
:func:`parse_document` checks every rule below and returns plain frozen
records (:class:`Document`, :mod:`edgeship.records`), which is what the agent reads (its process holds no
pydantic, ``docs/agent.md``: Footprint). The hub builds and signs with the pydantic
models of :mod:`edgeship.deployment_model` (``DeploymentDocument``, ``ModuleEntry``,
``ModuleSettings``..., importable from here too); their ``from_bytes`` runs
:func:`parse_document` first, and ``tests/modules/test_one_definition.py`` checks on a
corpus that both accept and refuse the same documents.

Invariants enforced on every parse:

- ``schemaVersion`` is 1 (anything else is :class:`SchemaVersionError`, reported
  as 412 so an old agent says "upgrade me" rather than "bad document");
- ``1 <= sequence <= MAX_SEQUENCE`` and ``expires > issuedAt``, both UTC with a ``Z``;
- a module's ``settings`` are only the inert allow-list: a port and a restart policy.
  Nothing the hub signs may decide what code runs (environment, command, container
  options): that is the release-signed manifest's alone (``docs/security.md``).
  ``env`` is known only so that the ``"env": {}`` older hubs wrote still parses; it
  must be empty;
- module names are usable as service names and distinct ignoring case;
- each ``module`` is a structurally valid DSSE envelope (trust is checked later,
  by ``edgeship.agent.decide.accept``);
- the whole document is at most :data:`MAX_DOCUMENT_BYTES`, checked before parsing.

No I/O and no clock here.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from edgeship.errors import EnvelopeError, ManifestError
from edgeship.modules.plain import Fields, InvalidField, integer, listing, load_json, one_of, optional, text
from edgeship.records import field, record

if TYPE_CHECKING:
    from edgeship.deployment_model import (
        DeploymentDocument,
        ModuleBlobs,
        ModuleEntry,
        ModuleSettings,
        build_document,
        sign_document,
    )

__all__ = [
    "BLOB_PREFIXES",
    "DEFAULT_TTL",
    "MAX_DOCUMENT_BYTES",
    "MAX_SEQUENCE",
    "MODULE_NAME",
    "RESTART_POLICIES",
    "SCHEMA_VERSION",
    "Blobs",
    "DeploymentDocument",
    "Document",
    "DocumentTooLargeError",
    "Entry",
    "ModuleBlobs",
    "ModuleEntry",
    "ModuleSettings",
    "RestartPolicy",
    "SchemaVersionError",
    "Settings",
    "build_document",
    "format_time",
    "parse_document",
    "sign_document",
]

SCHEMA_VERSION = 1
MAX_DOCUMENT_BYTES = 1024 * 1024  # bytes, of the signed envelope; larger ones are refused unread
MAX_SEQUENCE = 2**31 - 1  # the highest sequence a hub issues or an agent accepts (a signed 32-bit column)
DEFAULT_TTL = timedelta(days=7)  # how long a device may keep applying a document it cannot refresh
MODULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$"  # leaves room for a blue/green slot suffix
MAX_DEVICE_ID = 128  # characters
RESTART_POLICIES = ("always", "on-failure", "never")
BLOB_PREFIXES = ("https://", "http://", "/")  # an http(s) URL, or a path on the hub ('/blobs/...')

RestartPolicy = Literal["always", "on-failure", "never"]

_MODEL_NAMES = {"DeploymentDocument", "ModuleBlobs", "ModuleEntry", "ModuleSettings", "build_document",
                "sign_document"}  # fmt: skip
# UTC times as the hub writes them (format_time), with optional fractions and a Z or a zero offset.
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(Z|z|[+-]00:00)")


class DocumentTooLargeError(ManifestError):
    """A deployment document is over :data:`MAX_DOCUMENT_BYTES`; it was not parsed."""


class SchemaVersionError(ManifestError):
    """A deployment document has a schemaVersion this edgeship does not read."""


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:  # the pydantic models, for the hub: loaded on first use
        from edgeship import deployment_model

        return getattr(deployment_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_time(value: datetime) -> str:
    """The one time format of edgeship documents: ISO 8601, UTC, seconds, ``Z``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@record
class Blobs:
    """Where to fetch the artifacts. Untrusted locations: their digests come from the manifest."""

    bundle: str
    image: str | None = None


@record
class Settings:
    """How the device runs the module: per device, so hub-signed, so inert by construction."""

    port: int | None = None
    restart_policy: RestartPolicy = "on-failure"
    env: dict[str, str] = field(default_factory=dict)


@record
class Entry:
    module: dict[str, Any]  # the module manifest's DSSE envelope, as a JSON object
    blobs: Blobs
    settings: Settings = field(default_factory=Settings)


@record
class Document:
    device_id: str
    sequence: int
    issued_at: datetime
    expires: datetime
    modules: dict[str, Entry] = field(default_factory=dict)
    deployments: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


def parse_document(data: bytes) -> Document:
    """Parse a (verified) payload: size, then JSON, then schemaVersion, then every field."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLargeError(
            f"Deployment document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit."
        )
    obj = load_json(data, "Deployment document")
    if not isinstance(obj, dict):
        raise ManifestError("Deployment document must be a JSON object.")
    version = obj.get("schemaVersion")
    if version != SCHEMA_VERSION or isinstance(version, bool) or not isinstance(version, int):
        raise SchemaVersionError(
            f"Deployment document schemaVersion {version!r} is not supported (this agent reads "
            f"{SCHEMA_VERSION}); upgrade the agent."
        )
    try:
        return _document(obj)
    except InvalidField as exc:
        raise ManifestError(f"Deployment document is not valid: {exc.where or '(top level)'}: {exc}.") from None


def _time(value: Any, where: str) -> datetime:
    match = _TIME.fullmatch(text(value, where))
    if match is None:
        raise InvalidField(where, "times must be UTC with a 'Z' (e.g. 2025-01-01T00:00:00Z)")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    micro = int((match[7] or "0").ljust(6, "0"))
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone.utc)
    except ValueError as exc:
        raise InvalidField(where, f"not a valid time ({exc})") from None


def _blob(value: Any, where: str) -> str:
    location = text(value, where)
    if not location.startswith(BLOB_PREFIXES):
        raise InvalidField(
            where, f"blob location {location!r} must be an http(s) URL or a path on the hub ('/blobs/...')"
        )
    return location


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidField(where, "must be an object of strings")
    if value:
        names = ", ".join(sorted(value)[:5])
        raise InvalidField(
            where,
            f"environment variables ({names}) cannot be set by a deployment: they decide what code runs, "
            "so only the release-signed module may decide them; remove settings.env from the deployment",
        )
    return {}


def _settings(obj: Any, where: str) -> Settings:
    f = Fields(obj, where, {"port": "port", "restart_policy": "restartPolicy", "env": "env"})
    return Settings(f.get("port", optional(integer(1, 65535)), None),
                    f.get("restart_policy", one_of(*RESTART_POLICIES), "on-failure"),
                    f.get("env", _env, {}))  # fmt: skip


def _envelope(value: Any, where: str) -> dict[str, Any]:
    from edgeship.signing.dsse import Envelope

    if not isinstance(value, dict):
        raise InvalidField(where, "must be a JSON object")
    try:
        Envelope.from_dict(value)
    except EnvelopeError as exc:
        raise InvalidField(where, str(exc)) from None
    return value


def _entry(obj: Any, where: str) -> Entry:
    f = Fields(obj, where, {"module": "module", "blobs": "blobs", "settings": "settings"})
    module = f.get("module", _envelope)
    b = Fields(f.get("blobs", lambda v, _w: v), f.here("blobs"), {"bundle": "bundle", "image": "image"})
    blobs = Blobs(b.get("bundle", _blob), b.get("image", optional(_blob), None))
    return Entry(module, blobs, f.get("settings", _settings, Settings()))


def _modules(value: Any, where: str) -> dict[str, Entry]:
    if not isinstance(value, dict):
        raise InvalidField(where, "must be a JSON object")
    entries = {name: _entry(entry, f"{where}.{name}") for name, entry in value.items()}
    seen: set[str] = set()
    for name in value:
        if not re.match(MODULE_NAME, name):
            raise InvalidField(where, f"module name {name!r} must be 1-48 letters, digits, '.', '_' or '-'")
        if name.lower() in seen:
            raise InvalidField(where, f"module names differ only in case ({name!r}); one device runs one of them")
        seen.add(name.lower())
    return entries


def _device_id(value: Any, where: str) -> str:
    device = text(value, where)
    if not 1 <= len(device) <= MAX_DEVICE_ID:
        raise InvalidField(where, f"must be 1 to {MAX_DEVICE_ID} characters")
    return device


def _document(obj: dict[str, Any]) -> Document:
    f = Fields(obj, "", {"schema_version": "schemaVersion", "device_id": "deviceId", "sequence": "sequence",
                         "issued_at": "issuedAt", "expires": "expires", "modules": "modules",
                         "deployments": "deployments"})  # fmt: skip
    document = Document(
        schema_version=f.get("schema_version", integer(SCHEMA_VERSION, SCHEMA_VERSION), SCHEMA_VERSION),
        device_id=f.get("device_id", _device_id),
        sequence=f.get("sequence", integer(1, MAX_SEQUENCE)),
        issued_at=f.get("issued_at", _time),
        expires=f.get("expires", _time),
        modules=f.get("modules", _modules, {}),
        deployments=f.get("deployments", listing(text), []),
    )
    if document.expires <= document.issued_at:
        raise InvalidField("", "expires must be later than issuedAt")
    return document
