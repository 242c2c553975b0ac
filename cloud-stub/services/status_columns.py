"""What a deployment's status reads, as columns: the cheap read behind ``Deployments.deployment_status``.

The pure :func:`~edgeship.hub.status.deployment_status` needs each device's id and tags,
the sequence, deployments and issue time of its newest document, and its reported state
with the time it arrived. The store's record methods build a whole ``DesiredRecord`` per
device (the signed envelope too) and an ORM object per report, about 1 s of CPU at
10,000 devices, and the dashboard's deployment page asks every 2 s. Here the same facts
come in three column queries: tags, JSON and times are parsed once per distinct value
(a fleet shares a few tag sets, deployment lists and issue times), reports with orjson
(``benchmarks/dashboard/RESULTS.md``). The answers are the same records' fields
(``tests/ui/test_status_columns.py`` compares both reads).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import String, Text, func, select, type_coerce

from edgeship.hub.store import HubStore
from edgeship.hub.store.models import DesiredRow, ReportedRow

__all__ = ["Newest", "Report", "StatusColumns", "Tagged"]


class Tagged(NamedTuple):
    id: str
    tags: dict[str, Any]  # shared by devices with the same tags: read only


class Newest(NamedTuple):
    """A device's newest document, without its envelope."""

    sequence: int
    deployments: tuple[str, ...]
    issued: datetime


class Report(NamedTuple):
    state: dict[str, Any]
    received: datetime


class _Once:
    """A conversion applied once per distinct value."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        self.convert = convert
        self.done: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, (str, bytes, int, float, datetime)):  # a driver-parsed list: not hashable
            return self.convert(value)
        if value not in self.done:
            self.done[value] = self.convert(value)
        return self.done[value]


class StatusColumns:
    """Reads only; ``store`` is the hub's :class:`HubStore`."""

    def __init__(self, store: HubStore) -> None:
        self.store = store

    def devices(self) -> list[Tagged]:
        return [Tagged(device_id, tags) for device_id, tags, _ in self.store.device_tags()]

    def newest(self) -> dict[str, Newest]:
        """device -> its newest document (the highest sequence, as ``HubStore.latest_desired``)."""
        d = DesiredRow
        top = select(d.device_id, func.max(d.sequence).label("seq")).group_by(d.device_id).subquery()
        query = select(d.device_id, d.sequence, type_coerce(d.deployments, Text), type_coerce(d.issued, String())).join(
            top, (d.device_id == top.c.device_id) & (d.sequence == top.c.seq))
        with self.store._tx() as s:
            issued = _Once(_result_processor(s.get_bind().dialect, d.__table__.c.issued.type))
            deployments = _Once(_deployments)
            return {device: Newest(sequence, deployments(raw), issued(when))
                    for device, sequence, raw, when in s.execute(query)}

    def reports(self) -> dict[str, Report]:
        r = ReportedRow
        query = select(r.device_id, type_coerce(r.state, Text), type_coerce(r.received, String()))
        with self.store._tx() as s:
            received = _Once(_result_processor(s.get_bind().dialect, r.__table__.c.received.type))
            out: dict[str, Report] = {}
            for device, raw, when in s.execute(query):
                state = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
                out[device] = Report(state if isinstance(state, dict) else {}, received(when))
            return out


def _deployments(raw: Any) -> tuple[str, ...]:
    value = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    return tuple(value or ())


def _result_processor(dialect: Any, column_type: Any) -> Callable[[Any], Any]:
    """The column's own conversion of what the driver returns (SQLite: text; PostgreSQL: a datetime)."""
    process = column_type.dialect_impl(dialect).result_processor(dialect, None)
    return process if process is not None else (lambda value: value)
