"""``FleetQuery``: one page of the fleet, filtered and counted on the hub (the dashboard's fleet list).

A read-only view over the store's own read methods, kept in the service layer so the
REST API could offer the same query. Filters combine (all must hold):

- ``condition``: a target condition as ``deployment create`` takes it, parsed by the
  same parser (``TargetConditionError`` names the column) and evaluated on tags;
- ``status``: ``online``, ``offline``, ``applied``, ``pending`` or ``failing``;
- ``module``: ``NAME`` (the device reports that module) or ``NAME:VERSION``.

A device is *applied* when it reports code 200 for its newest document (the device's
last allocated sequence), *failing* when it reports any other code but 202 (in progress,
ADR 0042) or a module that is
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
from edgeship.reported import IN_PROGRESS

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
    return value if type(value) is int else None  # not bool; reports are parsed JSON, so exact types


def _state(sequence: int, report: dict[str, Any] | None) -> tuple[DeviceState, int | None, int | None]:
    """(state, applied sequence, code) of one device; runs for every device of a page's selection, so it
    tests exact JSON types (``type(x) is dict``) rather than ABCs, which cost a third of a 10,000-device page."""
    if report is None:
        return "pending", None, None
    status = report.get("status")
    code = _int(status.get("code")) if type(status) is dict else None
    applied = _int(report.get("lastAppliedSequence"))
    modules = report.get("modules")
    broken = type(modules) is dict and any(
        type(m) is dict and m.get("status") in _BAD_MODULE_STATES for m in modules.values())
    if (code is not None and code not in (200, IN_PROGRESS)) or broken:
        return "failing", applied, code
    if code == 200 and applied is not None and applied >= sequence:
        return "applied", applied, code
    return "pending", applied, code


def _has_module(modules: Mapping[str, Any], wanted: str) -> bool:
    name, _, version = wanted.partition(":")
    entry = modules.get(name)
    if type(entry) is not dict:
        return False
    return not version or entry.get("version") == int(version)


_Selected = tuple[str, dict[str, Any], int, DeviceState, "int | None", "int | None", "bool | None", "datetime | None",
                  dict[str, Any]]


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
        selected: list[_Selected] = []  # plain tuples: FleetRow objects are made for the page's rows only
        online_count = applied_count = failing_count = 0
        for device_id, tags, sequence in devices:
            report = reports.get(device_id)
            state, applied, code = _state(sequence, report)
            online, last_seen = presence.get(device_id, (None, None))
            raw_modules = report.get("modules") if report is not None else None
            modules = raw_modules if type(raw_modules) is dict else {}
            if filters.module and not _has_module(modules, filters.module):
                continue
            if filters.status and not _selected(state, online, filters.status):
                continue
            selected.append((device_id, tags, sequence, state, applied, code, online, last_seen, modules))
            online_count += bool(online)
            applied_count += state == "applied"
            failing_count += state == "failing"
        counts = FleetCounts(devices=len(selected), online=online_count, applied=applied_count, failing=failing_count)
        rows = [FleetRow(d, tags, online, seen, seq, applied, code, state, modules)
                for d, tags, seq, state, applied, code, online, seen, modules in selected[offset:offset + limit]]
        return FleetPage(rows, counts, offset, limit, len(everyone))

    def _presence(self) -> dict[str, tuple[bool, datetime]]:
        with self.store._tx() as s:
            query = select(PresenceRow.device_id, PresenceRow.online, PresenceRow.last_seen)
            return {device_id: (bool(online), seen) for device_id, online, seen in s.execute(query)}

    def _reports(self) -> dict[str, dict[str, Any]]:
        """Every stored report by device; the JSON text parsed here (SQLite), or as the driver parsed it."""
        out: dict[str, dict[str, Any]] = {}
        with self.store._tx() as s:
            for device_id, raw in s.execute(select(ReportedRow.device_id, type_coerce(ReportedRow.state, Text))):
                state = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
                if type(state) is dict:
                    out[device_id] = state
        return out


def _selected(state: DeviceState, online: bool | None, status: str) -> bool:
    if status == "online":
        return bool(online)
    if status == "offline":
        return not online
    return state == status
