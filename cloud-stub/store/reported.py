"""Reported state: each device's newest report, stored as received (the last stored wins, unless it answers an
older document than the stored one: ``(trustRootVersion, lastAppliedSequence)`` never goes back, and within one
document neither does the agent's ``reportNumber``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Table, and_, cast, not_, or_, select
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import Base, DeviceRow, ReportedRow
from edgeship.hub.store.records import ReportedRecord

__all__ = ["ReportedTables"]


class ReportedTables(StoreBase):
    """``reported``: one row per device, replaced by each report."""

    def put_reported(self, device_id: str, state: dict[str, Any], received: datetime) -> ReportedRecord:
        with self._tx() as s:
            need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            s.execute(_upsert(s, Base.metadata.tables["reported"]),
                      [{"device_id": device_id, "state": state, "received": received}])
            return ReportedRecord(device_id, state, received)

    def put_reported_many(
        self, items: Iterable[tuple[str, dict[str, Any], datetime]]
    ) -> tuple[builtins.list[ReportedRecord], builtins.list[str]]:
        """Store many reports in one transaction: ``(stored, ids of unknown devices)``.

        A device reported twice in ``items`` keeps its last report (as a retained topic
        would); a stored report is replaced by whichever is stored after it, unless that one answers
        an older document (see :func:`_upsert`; it is then left out, though returned as stored). Unknown
        devices are left out rather than failing the batch, so one stray topic cannot drop
        everyone else's reports. One upsert for all, so replicas storing the same device's
        first report at once do not conflict.
        """
        newest: dict[str, ReportedRecord] = {}
        for device_id, state, received in items:
            newest.pop(device_id, None)
            newest[device_id] = ReportedRecord(device_id, state, received)
        if not newest:
            return [], []
        ids = builtins.list(newest)
        table = Base.metadata.tables["reported"]
        with self._tx() as s:
            known = set(s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(ids))))
            stored = [r for r in newest.values() if r.device_id in known]
            if stored:  # rows in id order: two replicas' overlapping batches lock them in one order (no deadlock)
                rows = sorted(stored, key=lambda r: r.device_id)
                s.execute(_upsert(s, table), [{"device_id": r.device_id, "state": r.state, "received": r.received}
                                              for r in rows])
            return stored, [i for i in ids if i not in known]

    def reported(self, device_ids: Iterable[str] | None = None) -> dict[str, ReportedRecord]:
        query = select(ReportedRow)
        if device_ids is not None:
            query = query.where(ReportedRow.device_id.in_(builtins.list(device_ids)))
        with self._tx() as s:
            return {r.device_id: ReportedRecord(r.device_id, dict(r.state), r.received) for r in s.scalars(query)}


def _upsert(session: Session, table: Table) -> PgInsert | SqliteInsert:
    """``INSERT ... ON CONFLICT (device_id) DO UPDATE``, unless the stored report applied a later document.

    One statement, so two hub replicas storing a device's first report at once both succeed instead of one
    failing on the primary key. The ``WHERE`` keeps a report of a later document over one of an earlier
    document stored after it: with a shared subscription a device's successive reports reach different
    replicas, and the one holding the older report may store it last (seen in the replica kill test: a report
    of sequence 1 stored 0.3 s after the rollout issued sequence 2, over the device's report of 2).

    "Later" is ``(trustRootVersion, lastAppliedSequence)`` in that order. A device's sequence goes down only
    when a hub-key rotation voids its replay floor (``agent/decide/accept.replay_floor``: a stolen key pushed
    it up): that comes with a higher trust root, or after the device reported refusing documents under the
    new root (a 4xx report keeps the old floor's sequence), so a stored refusal is replaced by any report.
    Reports without a sequence (a wiped device) replace each other in the order they are stored; without a trust
    root version on either side the sequence alone decides.

    Reports of one document (same root and sequence: a 202 "waiting for the download host", then its 200) are
    ordered by the agent's ``reportNumber``, which grows by one per report it publishes (its ``reportedAt`` is its
    wall clock and may go back): a report replaces the stored one only if its number is not lower, even over a
    stored refusal (the rule above is for a sequence that went down). When either lacks the number (agents from
    before it, rows stored before it) the last stored wins, as before."""
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = upsert(table)
    stored_seq, new_seq = (t.state["lastAppliedSequence"].as_integer() for t in (table.c, statement.excluded))
    stored_root, new_root = (t.state["trustRootVersion"].as_integer() for t in (table.c, statement.excluded))
    stored_number, new_number = (_big(t.state["reportNumber"]) for t in (table.c, statement.excluded))
    stored_code = table.c.state[("status", "code")].as_integer()
    same_root = or_(stored_root.is_(None), new_root.is_(None), new_root == stored_root)
    same_document = and_(same_root, new_seq == stored_seq)
    in_order = or_(stored_number.is_(None), new_number.is_(None), new_number >= stored_number)
    newer = or_(stored_seq.is_(None), new_seq.is_(None), new_root > stored_root,
                and_(stored_code.between(400, 499), not_(same_document)),
                and_(same_root, new_seq > stored_seq), and_(same_document, in_order))
    return statement.on_conflict_do_update(
        index_elements=[table.c.device_id],
        set_={"state": statement.excluded.state, "received": statement.excluded.received},
        where=newer,
    )


def _big(value: Any) -> ColumnElement[int]:
    """A JSON number as a 64-bit integer: ``as_integer()`` casts to PostgreSQL's 32-bit ``INTEGER``, and a
    ``reportNumber`` goes up to 2**53."""
    return cast(value.as_string(), BigInteger)
