"""The hub store's records: frozen values the service layer gets instead of ORM objects.

A record is read inside one short transaction and never refers back to a session,
so a caller cannot touch the database outside a transaction by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeship.hub.store.models import DeviceRow, ModuleRow

__all__ = [
    "DeploymentRecord",
    "DesiredRecord",
    "DeviceRecord",
    "IssueRequest",
    "ModuleRecord",
    "ModuleRefRecord",
    "ReportedRecord",
    "device_record",
    "module_record",
]


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    tags: dict[str, Any]
    created: datetime
    last_sequence: int


@dataclass(frozen=True)
class ModuleRecord:
    name: str
    version: int
    envelope: dict[str, Any]
    manifest_digest: str
    bundle_digest: str
    image_digest: str | None
    variant: str
    created: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModuleRefRecord:
    name: str
    version: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class DeploymentRecord:
    id: str
    target_condition: str
    priority: int
    created: datetime
    modules: tuple[ModuleRefRecord, ...]


@dataclass(frozen=True)
class DesiredRecord:
    device_id: str
    sequence: int
    envelope: str
    fingerprint: str
    deployments: tuple[str, ...]
    issued: datetime
    expires: datetime


@dataclass(frozen=True)
class ReportedRecord:
    device_id: str
    state: dict[str, Any]
    received: datetime


@dataclass(frozen=True)
class IssueRequest:
    """One device's part of :meth:`HubStore.issue_many`: what its document asks for, and how to sign it.

    ``sign(sequence)`` returns ``(envelope JSON, issued, expires)``; it is called only
    when the document is issued, inside the transaction that allocates ``sequence``.
    """

    device_id: str
    fingerprint: str
    deployments: Sequence[str]
    sign: Callable[[int], tuple[str, datetime, datetime]]


def device_record(row: DeviceRow) -> DeviceRecord:
    return DeviceRecord(row.id, dict(row.tags or {}), row.created, row.last_sequence)


def module_record(row: ModuleRow) -> ModuleRecord:
    return ModuleRecord(
        row.name, row.version, dict(row.envelope), row.manifest_digest, row.bundle_digest, row.image_digest,
        row.variant, row.created,
    )
