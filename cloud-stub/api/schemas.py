"""The REST API's request and response bodies (camelCase on the wire, as the documents are)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import JsonDict

from edgeship.errors import InputError
from edgeship.hub.rollouts import RolloutPolicy
from edgeship.hub.rollouts.report import RolloutState
from edgeship.hub.services import DeviceView
from edgeship.hub.status import DeploymentStatus
from edgeship.hub.store import DeploymentRecord, ModuleRecord

__all__ = [
    "DEPLOYMENT_ID_RULE",
    "DEVICE_ID_RULE",
    "MAX_INT",
    "MAX_REASON",
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
    "RolloutActionIn",
    "RolloutEventOut",
    "RolloutOut",
    "TagsIn",
    "TelemetryOut",
    "TrustRootOut",
    "TrustRootRotatedOut",
    "parse_rollout",
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
MAX_REASON = 1024  # characters of an operator's reason for a rollout action, stored with its event


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
    rollout: dict[str, Any] | None = Field(
        default=None,
        description="A rollout policy (docs/rollouts.md), the options of 'edgeship deployment create' as camelCase "
                    "keys: waves, exponential, spreadBy, soak, advancePercent, approveEachWave, waveTimeout, "
                    "abortPercent, abortMin, abortOn. Omitted, or without waves or exponential: every targeted "
                    "device at once. 400 names the key a bad policy gets wrong.",
        examples=[{"waves": "1,10%,100%", "soak": "5m", "advancePercent": 95}],
    )


def parse_rollout(data: Mapping[str, Any] | None) -> RolloutPolicy | None:
    """A deployment's ``rollout`` mapping as a policy (the rules are ``RolloutPolicy.from_dict``'s); each
    :class:`InputError` names the key it is about, ``rollout.KEY``, when one key alone is wrong."""
    if data is None:
        return None
    for key, value in data.items():  # JSON reads Infinity, NaN and 1e400 as floats no duration or share can be
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise InputError(f"rollout.{key} must be a finite number, not {value!r}.")
    try:
        return RolloutPolicy.from_dict(data)
    except (InputError, OverflowError) as exc:
        for key in data:
            try:
                RolloutPolicy.from_dict({key: data[key]})
            except (InputError, OverflowError) as alone:
                raise InputError(f"rollout.{key}: {alone}") from exc
        if isinstance(exc, InputError):
            raise
        raise InputError(f"The rollout policy is not valid ({exc}).") from exc


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


class RolloutActionIn(_Body):
    """The optional body of ``POST /deployments/{id}/rollout/{action}``: why, stored with the event."""

    reason: str | None = Field(default=None, max_length=MAX_REASON, examples=["wave 1 looks healthy"])

    @field_validator("reason")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:  # PostgreSQL text cannot hold it
            raise ValueError("must not contain a NUL character")
        return value


class WaveOut(BaseModel):
    """One wave's devices by outcome (``RolloutView.to_dict()['waves']``)."""

    wave: int = Field(description="1-based.")
    status: Literal["done", "current", "next"]
    targeted: int
    applied: int = Field(description="Running the release: soaking + succeeded.")
    pending: int
    soaking: int
    succeeded: int
    failed: int
    refused: int
    timed_out: int = Field(alias="timedOut")
    unhealthy: int = Field(0, description="A health gate breached (docs/rollouts.md).")
    no_data: int = Field(0, alias="noData", description="Soaked, but a gate had too little data: never healthy.")


class RolledBackOut(BaseModel):
    device: str
    modules: list[str] = Field(description="'module:version' re-issued as the device's last known-good module.")


class GateValueOut(BaseModel):
    """One health gate over one module version's devices in one wave, as the engine judges them now
    (``GateValues.to_dict()``, ``edgeship.hub.rollouts.gate_values``)."""

    wave: int = Field(description="1-based.")
    module: str
    version: int
    gate: str = Field(description="The gate as typed: its threshold.", examples=["error_rate <= 1%"])
    metric: Literal["error_rate", "p99_ratio", "restarts"]
    threshold: float = Field(description="error_rate as a fraction (1% is 0.01).")
    verdict: Literal["pass", "breach", "no-data", "waiting"]
    devices: int = Field(description="The wave's devices running the release.")
    passing: int
    breaching: int
    no_data: int = Field(alias="noData", description="Too few requests (or no baseline) to judge.")
    waiting: int = Field(description="p99_ratio of devices still soaking: not judged yet.")
    worst: float | None = Field(description="The highest value measured (error_rate as a fraction).")
    worst_device: str | None = Field(alias="worstDevice")
    worst_detail: str = Field(alias="worstDetail", examples=["error_rate 2% (2 of 100)"])


class RolloutOut(BaseModel):
    """A rollout as ``deployment show`` renders it: ``RolloutView.to_dict()`` as the service builds it."""

    deployment: str
    state: RolloutState
    wave: int = Field(description="The newest wave out, 1-based.")
    waves: list[WaveOut]
    waiting_for: str = Field(alias="waitingFor", description="What the rollout waits for now; '' when it is over.")
    reason: str = Field(description="Why it is in its state: the abort reason, the timeout that stopped it, ...")
    tripped: list[str] = Field(description="The devices that made it abort.")
    rolled_back: list[RolledBackOut] = Field(alias="rolledBack")
    policy: dict[str, Any] = Field(description="The policy as stored, with every default filled in.")
    started: str = Field(description="ISO 8601 time.")
    updated: str = Field(description="ISO 8601 time.")


class RolloutEventOut(BaseModel):
    """One stored state change of a rollout."""

    at: str = Field(description="ISO 8601 time.")
    actor: str = Field(description="The operator token's name, or 'hub' for the engine.")
    action: str = Field(examples=["started", "wave-started", "paused", "resumed", "approved", "aborted"])
    state: RolloutState
    reason: str
    detail: dict[str, Any]


class DeploymentOut(_Body):
    name: str
    target_condition: str = Field(alias="targetCondition")
    priority: int
    created: datetime
    modules: list[ModuleRefIn]
    status: DeploymentStatusOut | None = None
    rollout: RolloutOut | None = Field(default=None, description="Its rollout, when it goes out in waves.")

    @classmethod
    def of(cls, record: DeploymentRecord, status: DeploymentStatus | None = None,
           rollout: RolloutOut | None = None) -> DeploymentOut:
        return cls(
            name=record.id,
            targetCondition=record.target_condition,
            priority=record.priority,
            created=record.created,
            modules=[ModuleRefIn(name=m.name, version=m.version, settings=m.settings) for m in record.modules],
            status=DeploymentStatusOut.of(status) if status is not None else None,
            rollout=rollout,
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
