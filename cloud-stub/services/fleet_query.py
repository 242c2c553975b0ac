"""``FleetQuery``: one page of the fleet, filtered and counted on the hub (the dashboard's fleet list).

A read-only view over the store's own read methods, kept in the service layer so the
REST API could offer the same query. Filters combine (all must hold):

- ``condition``: a target condition as ``deployment create`` takes it, parsed by the
  same parser (``TargetConditionError`` names the column) and evaluated on tags;
- ``status``: ``online``, ``offline``, ``applied``, ``pending`` or ``failing``;
- ``module``: ``NAME`` (the device reports that module) or ``NAME:VERSION``.

A device is *applied* when it reports code 200 for its newest document (the device's
last allocated sequence), *failing* when it reports any other code or a module that is
failed or in back-off, and *pending* otherwise (no report yet, or an older document).
Counts are over the devices the filters select. Everything is read in three queries
whatever the page (tags, presence, reports; no signed documents), as columns rather than
ORM objects (building 10,000 report objects cost most of a page), so a page of a
10,000-device fleet costs about what the whole fleet's counts cost
(``benchmarks/dashboard/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from sqlalchemy import Text, select, type_coerce

from edgeship.errors import InputError
from edgeship.hub.services.rules import parsed_condition
from edgeship.hub.store import HubStore
from edgeship.hub.store.models import ReportedRow
from edgeship.hub.store.telemetry import PresenceRow
from edgeship.hub.targeting import DeviceFacts, evaluate

__all__ = ["MAX_PAGE", "STATUSES", "FleetCounts", "FleetFilter", "FleetPage", "FleetQuery", "FleetRow"]

DeviceState = Literal["applied", "pending", "failing"]
STATUSES = ("online", "offline", "applied", "pending", "failing")
MAX_PAGE = 500  # devices per page
MAX_MODULE_FILTER = 200  # characters of a NAME or NAME:VERSION filter
_BAD_MODULE_STATES = frozenset({"failed", "backoff"})


@dataclass(frozen=True)
class FleetFilter:
    condition: str = ""  # empty: every device
    status: str = ""  # empty: any
    module: str = ""  # empty: any; NAME or NAME:VERSION

    def check(self) -> None:
        """Raise an InputError (a TargetConditionError for the condition) naming what is wrong."""
        if self.condition.strip():
            parsed_condition(self.condition)
        if self.status and self.status not in STATUSES:
            raise InputError(f"Unknown status filter {self.status!r}; use one of: {', '.join(STATUSES)}.")
        if len(self.module) > MAX_MODULE_FILTER:
            raise InputError(f"A module filter is at most {MAX_MODULE_FILTER} characters (NAME or NAME:VERSION).")
        _, _, version = self.module.partition(":")
        if version and not version.isdigit():
            raise InputError(f"Module filter {self.module!r}: the version after ':' must be a number (digits:2).")


@dataclass(frozen=True)
class FleetRow:
    device_id: str
    tags: Mapping[str, Any]
    online: bool | None  # None: the device never connected
    last_seen: datetime | None
    sequence: int  # the newest document's sequence (0: none issued)
    applied_sequence: int | None
    code: int | None
    state: DeviceState
    modules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # as reported


@dataclass(frozen=True)
class FleetCounts:
    devices: int = 0
    online: int = 0
    applied: int = 0
    failing: int = 0


@dataclass(frozen=True)
class FleetPage:
    rows: list[FleetRow]
    counts: FleetCounts  # over every device the filters select
    offset: int
    limit: int
    fleet_size: int  # every device of the hub


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _state(sequence: int, report: Mapping[str, Any] | None) -> tuple[DeviceState, int | None, int | None]:
    if report is None:
        return "pending", None, None
    status = report.get("status")
    code = _int(status.get("code")) if isinstance(status, Mapping) else None
    applied = _int(report.get("lastAppliedSequence"))
    modules = report.get("modules")
    broken = isinstance(modules, Mapping) and any(
        isinstance(m, Mapping) and m.get("status") in _BAD_MODULE_STATES for m in modules.values())
    if (code is not None and code != 200) or broken:
        return "failing", applied, code
    if code == 200 and applied is not None and applied >= sequence:
        return "applied", applied, code
    return "pending", applied, code


def _has_module(modules: Mapping[str, Any], wanted: str) -> bool:
    name, _, version = wanted.partition(":")
    entry = modules.get(name)
    if not isinstance(entry, Mapping):
        return False
    return not version or entry.get("version") == int(version)


class FleetQuery:
    """Pages of the fleet with the dashboard's filters and counts; reads only."""

    def __init__(self, store: HubStore) -> None:
        self.store = store

    def page(self, filters: FleetFilter, offset: int = 0, limit: int = 50) -> FleetPage:
        filters.check()
        if not 1 <= limit <= MAX_PAGE:
            raise InputError(f"A page holds 1 to {MAX_PAGE} devices; got {limit}.")
        if offset < 0:
            raise InputError(f"A page's offset is 0 or more; got {offset}.")
        condition = parsed_condition(filters.condition) if filters.condition.strip() else None
        everyone = self.store.device_tags()
        devices = everyone
        if condition is not None:
            devices = [d for d in everyone if evaluate(condition, DeviceFacts(d[0], d[1]))]
        presence = self._presence() if devices else {}
        reports = self._reports() if devices else {}
        rows: list[FleetRow] = []
        for device_id, tags, sequence in devices:
            report = reports.get(device_id)
            state, applied, code = _state(sequence, report)
            online, last_seen = presence.get(device_id, (None, None))
            raw_modules = report.get("modules") if report is not None else None
            modules = raw_modules if isinstance(raw_modules, Mapping) else {}
            row = FleetRow(device_id, tags, online, last_seen, sequence, applied, code, state, modules)
            if filters.module and not _has_module(modules, filters.module):
                continue
            if filters.status and not _selected(row, filters.status):
                continue
            rows.append(row)
        counts = FleetCounts(
            devices=len(rows),
            online=sum(1 for r in rows if r.online),
            applied=sum(1 for r in rows if r.state == "applied"),
            failing=sum(1 for r in rows if r.state == "failing"),
        )
        return FleetPage(rows[offset:offset + limit], counts, offset, limit, len(everyone))


    def _presence(self) -> dict[str, tuple[bool, datetime]]:
        with self.store._tx() as s:
            query = select(PresenceRow.device_id, PresenceRow.online, PresenceRow.last_seen)
            return {device_id: (bool(online), seen) for device_id, online, seen in s.execute(query)}

    def _reports(self) -> dict[str, Mapping[str, Any]]:
        """Every stored report by device; the JSON text parsed here (SQLite), or as the driver parsed it."""
        out: dict[str, Mapping[str, Any]] = {}
        with self.store._tx() as s:
            for device_id, raw in s.execute(select(ReportedRow.device_id, type_coerce(ReportedRow.state, Text))):
                state = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
                if isinstance(state, Mapping):
                    out[device_id] = state
        return out


def _selected(row: FleetRow, status: str) -> bool:
    if status == "online":
        return bool(row.online)
    if status == "offline":
        return not row.online
    return row.state == status
