"""Reported state: each device's newest report, stored as received (last one wins)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import Base, DeviceRow, ReportedRow
from edgeship.hub.store.records import ReportedRecord

__all__ = ["ReportedTables"]


class ReportedTables(StoreBase):
    """``reported``: one row per device, replaced by each report."""

    def put_reported(self, device_id: str, state: dict[str, Any], received: datetime) -> ReportedRecord:
        with self._tx() as s:
            need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            row = s.get(ReportedRow, device_id)
            if row is None:
                s.add(ReportedRow(device_id=device_id, state=state, received=received))
            else:
                row.state, row.received = state, received
            return ReportedRecord(device_id, state, received)

    def put_reported_many(
        self, items: Iterable[tuple[str, dict[str, Any], datetime]]
    ) -> tuple[builtins.list[ReportedRecord], builtins.list[str]]:
        """Store many reports in one transaction: ``(stored, ids of unknown devices)``.

        A device reported twice in ``items`` keeps its last report (as a retained topic
        would). Unknown devices are left out rather than failing the batch, so one
        stray topic cannot drop everyone else's reports.
        """
        newest: dict[str, ReportedRecord] = {}
        for device_id, state, received in items:
            newest.pop(device_id, None)
            newest[device_id] = ReportedRecord(device_id, state, received)
        if not newest:
            return [], []
        ids = builtins.list(newest)
        for attempt in range(3):
            try:
                return self._put_newest(newest, ids)
            except IntegrityError:
                # Another hub replica inserted a first report for one of these devices between
                # this transaction's read and its insert (PostgreSQL): read again and update it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _put_newest(
        self, newest: dict[str, ReportedRecord], ids: builtins.list[str]
    ) -> tuple[builtins.list[ReportedRecord], builtins.list[str]]:
        with self._tx() as s:
            known = set(s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(ids))))
            present = set(s.scalars(select(ReportedRow.device_id).where(ReportedRow.device_id.in_(ids))))
            stored = [r for r in newest.values() if r.device_id in known]
            table = Base.metadata.tables["reported"]
            updates = [{"b_id": r.device_id, "b_state": r.state, "b_received": r.received}
                       for r in stored if r.device_id in present]
            inserts = [{"device_id": r.device_id, "state": r.state, "received": r.received}
                       for r in stored if r.device_id not in present]
            if updates:
                s.execute(
                    update(table).where(table.c.device_id == bindparam("b_id"))
                    .values(state=bindparam("b_state"), received=bindparam("b_received")),
                    updates,
                )
            if inserts:
                s.execute(insert(table), inserts)
            return stored, [i for i in ids if i not in known]

    def reported(self, device_ids: Iterable[str] | None = None) -> dict[str, ReportedRecord]:
        query = select(ReportedRow)
        if device_ids is not None:
            query = query.where(ReportedRow.device_id.in_(builtins.list(device_ids)))
        with self._tx() as s:
            return {r.device_id: ReportedRecord(r.device_id, dict(r.state), r.received) for r in s.scalars(query)}
