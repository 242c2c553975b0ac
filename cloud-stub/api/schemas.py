"""The REST API's request and response bodies (camelCase on the wire, as the documents are)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import JsonDict

from edgeship.hub.services import DeviceView
from edgeship.hub.status import DeploymentStatus
from edgeship.hub.store import DeploymentRecord, ModuleRecord

__all__ = [
    "DEPLOYMENT_ID_RULE",
    "DEVICE_ID_RULE",
    "MAX_INT",
    "METHOD_RULE",
    "MODULE_NAME_RULE",
    "CredentialsOut",
    "DeploymentIn",
    "DeploymentOut",
    "DeploymentStatusOut",
    "DeviceCreatedOut",
    "DeviceDeletedOut",
    "DeviceIn",
    "DeviceOut",
    "EnvelopeOut",
    "MethodAnswerOut",
    "ModuleIn",
    "ModuleOut",
    "ModuleRefIn",
    "TagsIn",
    "TelemetryOut",
    "TrustRootOut",
    "TrustRootRotatedOut",
]

MAX_INT = 2**31 - 1
"""The largest version or priority the API takes: the store's integer columns are signed 32-bit on PostgreSQL."""

# The id rules, documented in the OpenAPI (clients and schemathesis see them) but enforced by the
# service's validators, which answer 400 with the rule in words (edgeship.mqtt.identity,
# edgeship.hub.services.rules, edgeship.registry.refs); tests/hub/test_api_openapi.py keeps both equal.
DEVICE_ID_RULE: JsonDict = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", "maxLength": 128}
DEPLOYMENT_ID_RULE: JsonDict = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "maxLength": 128}
MODULE_NAME_RULE: JsonDict = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "maxLength": 128}
METHOD_RULE: JsonDict = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "maxLength": 64}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DeviceIn(_Body):
    id: str = Field(examples=["dev-1"], json_schema_extra=DEVICE_ID_RULE)
    tags: dict[str, Any] = Field(default_factory=dict, examples=[{"site": "lab", "arch": "arm64"}])
    credentials: Literal["password", "certificate"] = Field(
        default="password", description="Broker login: a random password, or a client certificate from the hub CA."
    )


class TagsIn(_Body):
    tags: dict[str, Any]


class DeviceOut(_Body):
    id: str
    tags: dict[str, Any]
    created: datetime
    desired_sequence: int | None = Field(alias="desiredSequence")
    desired_expires: datetime | None = Field(alias="desiredExpires")
    reported: dict[str, Any] | None
    reported_at: datetime | None = Field(alias="reportedAt")
    online: bool | None = Field(default=None, description="The device's retained online flag; null: never heard.")
    last_seen: datetime | None = Field(default=None, alias="lastSeen")

    @classmethod
    def of(cls, view: DeviceView) -> DeviceOut:
        heard = [t for t in (view.presence.last_seen if view.presence else None,
                             view.reported.received if view.reported else None) if t is not None]
        return cls(
            id=view.device.id,
            tags=view.device.tags,
            created=view.device.created,
            desiredSequence=view.desired.sequence if view.desired else None,
            desiredExpires=view.desired.expires if view.desired else None,
            reported=view.reported.state if view.reported else None,
            reportedAt=view.reported.received if view.reported else None,
            online=view.presence.online if view.presence else None,
            lastSeen=max(heard) if heard else None,
        )


class CredentialsOut(_Body):
    """Broker credentials, shown once: ``credentials`` is ``{"kind", "username", "password"}`` or
    ``{"kind", "username", "certificate", "privateKey", "caCertificate", "serial"}`` (PEM)."""

    credentials: dict[str, Any]
    broker: str = Field(description="'reloaded', 'written', 'unmanaged' (the hub manages no broker config), "
                                    "or 'failed: why' (the change is stored; reload the broker).")


class DeviceCreatedOut(DeviceOut):
    """The new device and its one-time broker credentials."""

    credentials: dict[str, Any]
    broker: str


class DeviceDeletedOut(_Body):
    deleted: str
    broker: str


class TelemetryOut(_Body):
    """One stored telemetry batch (``docs/mqtt.md``) and when the hub received it."""

    received: datetime
    batch: dict[str, Any]


class ModuleIn(_Body):
    """Upload a module that ``edgeship package`` stored in a workspace on the hub's machine."""

    workspace: str = Field(
        max_length=4096, examples=["/srv/edgeship"],
        description="Absolute path of the packaging workspace (EDGESHIP_HOME) on the hub's machine.",
    )
    name: str = Field(examples=["digits"], json_schema_extra=MODULE_NAME_RULE)
    version: int | None = Field(default=None, ge=1, le=MAX_INT, description="Latest when omitted.")

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # A relative or empty path would resolve against the hub's working directory or its default home.
        if not value.startswith("/") or "\x00" in value:
            raise ValueError("must be an absolute path on the hub's machine (starting with '/', no NUL)")
        return value


class ModuleOut(_Body):
    name: str
    version: int
    variant: str
    manifest_digest: str = Field(alias="manifestDigest")
    bundle: str
    image: str | None
    created: datetime
    envelope: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: ModuleRecord, *, envelope: bool = False) -> ModuleOut:
        return cls(
            name=record.name,
            version=record.version,
            variant=record.variant,
            manifestDigest=record.manifest_digest,
            bundle=f"/blobs/{record.bundle_digest}",
            image=f"/blobs/{record.image_digest}" if record.image_digest else None,
            created=record.created,
            envelope=record.envelope if envelope else None,
        )


class ModuleRefIn(_Body):
    name: str = Field(examples=["digits"], json_schema_extra=MODULE_NAME_RULE)
    version: int = Field(ge=1, le=MAX_INT, examples=[1])
    settings: dict[str, Any] = Field(default_factory=dict, examples=[{"port": 5001, "restartPolicy": "on-failure"}])


class DeploymentIn(_Body):
    name: str = Field(examples=["lab"], json_schema_extra=DEPLOYMENT_ID_RULE)
    target_condition: str = Field(alias="targetCondition", examples=["tags.site = 'lab' AND tags.arch IN ('amd64')"])
    priority: int = Field(default=0, ge=-MAX_INT, le=MAX_INT, description="The highest wins a module name.")
    modules: list[ModuleRefIn]


class DeploymentStatusOut(_Body):
    counts: dict[str, int]
    devices: list[dict[str, Any]]

    @classmethod
    def of(cls, status: DeploymentStatus) -> DeploymentStatusOut:
        return cls(
            counts=status.counts(),
            devices=[
                {
                    "deviceId": d.device_id,
                    "state": d.state,
                    "desiredSequence": d.desired_sequence,
                    "reportedSequence": d.reported_sequence,
                    "code": d.code,
                    "reason": d.reason,
                }
                for d in status.devices
            ],
        )


class DeploymentOut(_Body):
    name: str
    target_condition: str = Field(alias="targetCondition")
    priority: int
    created: datetime
    modules: list[ModuleRefIn]
    status: DeploymentStatusOut | None = None

    @classmethod
    def of(cls, record: DeploymentRecord, status: DeploymentStatus | None = None) -> DeploymentOut:
        return cls(
            name=record.id,
            targetCondition=record.target_condition,
            priority=record.priority,
            created=record.created,
            modules=[ModuleRefIn(name=m.name, version=m.version, settings=m.settings) for m in record.modules],
            status=DeploymentStatusOut.of(status) if status is not None else None,
        )


class EnvelopeOut(BaseModel):
    """A DSSE envelope (``docs/signing.md``): a signed deployment document, module manifest or trust root."""

    payload_type: str = Field(alias="payloadType")
    payload: str = Field(description="The signed bytes, base64.")
    signatures: list[dict[str, str]] = Field(description="[{keyid, sig}], sig base64.")


class MethodAnswerOut(BaseModel):
    """The device's answer to a direct method, as it sent it (``docs/mqtt.md``)."""

    model_config = ConfigDict(extra="allow")
    status: int = Field(description="The method's own status (200, 404, 409, ...), set by the device.")
    result: Any = None
    error: Any = None


class TrustRootOut(BaseModel):
    version: int
    trust_root: dict[str, Any] = Field(alias="trustRoot")
    chain: list[int] = Field(description="The versions of every rotation devices get on their trust-root topic.")


class TrustRootRotatedOut(BaseModel):
    version: int
    trust_root: dict[str, Any] = Field(alias="trustRoot")
    hub_keys: list[str] = Field(alias="hubKeys", description="Key ids the hub now signs documents with.")
