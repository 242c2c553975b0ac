"""Deployment status per device, from the hub's desired documents and the devices' reported state.

A pure function over records, so the REST API, the (later) MQTT bridge and the
dashboard agree on what "applied" means. The counts follow Azure IoT Edge's
deployment metrics:

- **targeted**: the target condition matches the device;
- **applied**: targeted, and the device's newest document carries at least one of
  this deployment's modules (not overridden by higher-priority deployments);
- **reportingSuccess**: applied, and the device reports code 200 for that document
  (or a later one);
- **reportingFailure**: applied, and the device reports 500 for it, or refused a
  document (400/401/409/410/412) after it was issued. A device that reports 202 for it
  (in progress: waiting for an unreachable download host) is neither; it stays pending.

Per device the state is ``pending``, ``applied``, ``failed`` or ``overridden``,
with the device's own reason for a failure, or ``held`` when a staged rollout has not
let the deployment count for it (its wave is not out, or the rollout aborted), with
the rollout's reason (``docs/rollouts.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from edgeship.hub.targeting import Condition, DeviceFacts, evaluate
from edgeship.reported import IN_PROGRESS

__all__ = ["DeploymentStatus", "DeviceDeploymentState", "DeviceStatus", "deployment_status"]

DeviceDeploymentState = Literal["pending", "applied", "failed", "overridden", "held"]


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    state: DeviceDeploymentState
    desired_sequence: int | None
    reported_sequence: int | None
    code: int | None
    reason: str | None


@dataclass(frozen=True)
class DeploymentStatus:
    deployment_id: str
    targeted: int
    applied: int
    reporting_success: int
    reporting_failure: int
    devices: list[DeviceStatus] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "targeted": self.targeted,
            "applied": self.applied,
            "reportingSuccess": self.reporting_success,
            "reportingFailure": self.reporting_failure,
        }


class DeviceLike(Protocol):  # DeviceRecord, or the dashboard's column read (services/status_columns.py)
    @property
    def id(self) -> str: ...

    @property
    def tags(self) -> Mapping[str, Any]: ...


class DesiredLike(Protocol):  # DesiredRecord, or its columns without the envelope
    @property
    def sequence(self) -> int: ...

    @property
    def deployments(self) -> tuple[str, ...]: ...

    @property
    def issued(self) -> datetime: ...


class ReportedLike(Protocol):  # ReportedRecord, or its columns
    @property
    def state(self) -> Mapping[str, Any]: ...

    @property
    def received(self) -> datetime: ...


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _device_status(
    deployment_id: str, device_id: str, desired: DesiredLike | None, reported: ReportedLike | None
) -> DeviceStatus:
    sequence = desired.sequence if desired is not None else None
    state: Mapping[str, Any] = reported.state if reported is not None else {}
    raw_status = state.get("status")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    code = _int(status.get("code"))
    applied_seq = _int(state.get("lastAppliedSequence"))
    reason = status.get("message") or status.get("description")
    reason = str(reason) if reason else None

    if desired is None:
        return DeviceStatus(device_id, "pending", None, applied_seq, code, None)
    if deployment_id not in desired.deployments:
        return DeviceStatus(device_id, "overridden", sequence, applied_seq, code, None)
    current = applied_seq is not None and sequence is not None and applied_seq >= sequence
    if code == 200 and current:
        return DeviceStatus(device_id, "applied", sequence, applied_seq, code, None)
    if code == 500 and current:
        return DeviceStatus(device_id, "failed", sequence, applied_seq, code, reason)
    if code == IN_PROGRESS and current:  # the device waits for its download host and retries (ADR 0042)
        return DeviceStatus(device_id, "pending", sequence, applied_seq, code, reason)
    refused_since = (
        code is not None and code not in (200, IN_PROGRESS, 500) and reported is not None
        and reported.received >= desired.issued
    )
    if refused_since:
        return DeviceStatus(device_id, "failed", sequence, applied_seq, code, reason)
    return DeviceStatus(device_id, "pending", sequence, applied_seq, code, None)


def deployment_status(
    deployment_id: str,
    condition: Condition,
    devices: Iterable[DeviceLike],
    desired: Mapping[str, DesiredLike],
    reported: Mapping[str, ReportedLike],
    held: Callable[[str], str | None] = lambda _device: None,
) -> DeploymentStatus:
    """The status of one deployment over ``devices`` (those it does not target are left out).

    ``held(device)`` is the reason a staged rollout does not let the deployment count for
    the device yet (None: it counts).
    """
    rows = []
    for d in devices:
        if not evaluate(condition, DeviceFacts(d.id, d.tags)):
            continue
        why = held(d.id)
        if why is None:
            rows.append(_device_status(deployment_id, d.id, desired.get(d.id), reported.get(d.id)))
        else:
            seq = desired[d.id].sequence if d.id in desired else None
            rows.append(DeviceStatus(d.id, "held", seq, None, None, why))
    return DeploymentStatus(
        deployment_id=deployment_id,
        targeted=len(rows),
        applied=sum(1 for r in rows if r.state in ("pending", "applied", "failed") and r.desired_sequence is not None),
        reporting_success=sum(1 for r in rows if r.state == "applied"),
        reporting_failure=sum(1 for r in rows if r.state == "failed"),
        devices=rows,
    )
