"""Signed desired documents: per-device sequences allocated under the device row lock, and the newest reads.

Invariant: a device's sequences are strictly increasing and never reused, even with
several hub replicas, because the counter on its row is read, incremented and the
document inserted in one transaction that holds the row (ADR 0009).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, Subquery, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.orm import Session

from edgeship.deployment import MAX_SEQUENCE
from edgeship.hub.errors import HubNotFoundError, SequenceExhaustedError
from edgeship.hub.store.engine import HubStoreError, StoreBase
from edgeship.hub.store.models import Base, DesiredRow, DeviceRow
from edgeship.hub.store.records import DesiredRecord, IssueRequest

__all__ = ["DocumentTables", "SignMany"]

SignMany = Callable[[Sequence[tuple[IssueRequest, int]]], Sequence[tuple[str, datetime, datetime]]]
"""Signs allocated ``(request, sequence)`` pairs at once: ``(envelope JSON, issued, expires)`` for each, in order."""


class DocumentTables(StoreBase):
    """``desired``: issue documents (one or a batch) and read each device's newest."""

    def issue(
        self,
        device_id: str,
        fingerprint: str,
        deployments: Sequence[str],
        sign: Callable[[int], tuple[str, datetime, datetime]],
        *,
        reissue_before: datetime | None = None,
    ) -> DesiredRecord | None:
        """Allocate the device's next sequence and store the document ``sign(sequence)`` returns.

        :meth:`issue_many` for one device: ``None`` (and nothing allocated) when the
        newest document already has ``fingerprint`` and was issued after ``reissue_before``.
        """
        issued = self.issue_many([IssueRequest(device_id, fingerprint, deployments, sign)],
                                 reissue_before=reissue_before)
        return issued[0] if issued else None

    def issue_many(
        self, requests: Sequence[IssueRequest], *, reissue_before: datetime | None = None,
        sign_many: SignMany | None = None, known: Mapping[str, tuple[int, str, datetime]] | None = None,
    ) -> builtins.list[DesiredRecord]:
        """Issue documents for many devices in one transaction; returns those issued, in request order.

        The device rows are locked first (in id order, so two batches cannot deadlock):
        each fingerprint comparison, counter increment and insert cannot interleave
        with another issue for the same device, so sequences are strictly increasing
        and never reused. A device whose newest document already has the request's
        fingerprint and was issued after ``reissue_before`` is skipped.

        ``known``: :meth:`newest_issues` as read before (one query, so consistent per
        device). A device whose counter is still the known document's sequence has had no
        document since, so its fingerprint is not read again under the lock.

        ``sign_many`` signs every allocated ``(request, sequence)`` at once (the issuer
        spreads the signatures over processes); without it each request's ``sign`` is
        called. The counters are updated and the documents inserted with one
        ``executemany`` each on the driver's cursor (no ORM or per-row SQLAlchemy type
        processing: values shared by the batch, the times and the deployment list, are
        converted once).
        """
        ids = [r.device_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("issue_many needs each device at most once per call")
        if not requests:
            return []
        with self._tx() as s:
            locked = select(DeviceRow.id, DeviceRow.last_sequence).where(DeviceRow.id.in_(ids))
            counters = {row.id: row.last_sequence for row in s.execute(locked.order_by(DeviceRow.id).with_for_update())}
            for device_id in ids:
                if device_id not in counters:
                    raise HubNotFoundError(f"No device {device_id!r} on the hub.")
            latest: dict[str, tuple[str, datetime]] = {}
            unsure = []
            for device_id in ids:
                newest = known.get(device_id) if known is not None else None
                if newest is not None and newest[0] == counters[device_id]:
                    latest[device_id] = (newest[1], newest[2])
                else:
                    unsure.append(device_id)
            if unsure:
                latest.update(_latest_fingerprints(s, unsure))
            allocated: builtins.list[tuple[IssueRequest, int]] = []
            for request in requests:
                prior = latest.get(request.device_id)
                fresh = reissue_before is None or prior is None or prior[1] > reissue_before
                if prior is not None and prior[0] == request.fingerprint and fresh:
                    continue
                sequence = counters[request.device_id] + 1
                if sequence > MAX_SEQUENCE:
                    raise SequenceExhaustedError(
                        f"Device {request.device_id!r} has used every document sequence up to {MAX_SEQUENCE}; "
                        "delete and re-create the device and clear its agent's state folder to start the count again."
                    )
                allocated.append((request, sequence))
            signed = sign_many(allocated) if sign_many is not None else [r.sign(q) for r, q in allocated]
            issued = [
                DesiredRecord(request.device_id, sequence, envelope, request.fingerprint, tuple(request.deployments),
                              when, expires)
                for (request, sequence), (envelope, when, expires) in zip(allocated, signed, strict=True)
            ]
            if issued:
                _write(s, issued)
            return issued

    def latest_desired(self, device_ids: Iterable[str] | None = None) -> dict[str, DesiredRecord]:
        """The newest document of each device (of ``device_ids``, or of all), in one query."""
        ids = None if device_ids is None else builtins.list(device_ids)
        d = DesiredRow
        query = select(d.device_id, d.sequence, d.envelope, d.fingerprint, d.deployments, d.issued, d.expires)
        with self._tx() as s:
            return {
                r.device_id: DesiredRecord(r.device_id, r.sequence, r.envelope, r.fingerprint,
                                           tuple(r.deployments or ()), r.issued, r.expires)
                for r in s.execute(query.join(*_newest(ids)))
            }

    def newest_issues(self, device_ids: Iterable[str] | None = None) -> dict[str, tuple[int, str, datetime]]:
        """``(sequence, fingerprint, issued)`` of each device's newest document, in one query (``known`` of
        :meth:`issue_many`)."""
        with self._tx() as s:
            return _newest_issues(s, None if device_ids is None else builtins.list(device_ids))

    def latest_fingerprints(self, device_ids: Iterable[str] | None = None) -> dict[str, tuple[str, datetime]]:
        """``(fingerprint, issued)`` of each device's newest document: what re-evaluation compares, without
        reading the envelopes."""
        with self._tx() as s:
            return _latest_fingerprints(s, None if device_ids is None else builtins.list(device_ids))


def _newest(ids: Sequence[str] | None) -> tuple[Subquery, ColumnElement[bool]]:
    """A join that limits a query over ``DesiredRow`` columns to each device's newest document."""
    newest = select(DesiredRow.device_id, func.max(DesiredRow.sequence).label("seq")).group_by(DesiredRow.device_id)
    if ids is not None:
        newest = newest.where(DesiredRow.device_id.in_(ids))
    sub = newest.subquery()
    return sub, (DesiredRow.device_id == sub.c.device_id) & (DesiredRow.sequence == sub.c.seq)


def _latest_fingerprints(s: Session, ids: Sequence[str] | None) -> dict[str, tuple[str, datetime]]:
    return {device: (fingerprint, issued) for device, (_seq, fingerprint, issued) in _newest_issues(s, ids).items()}


def _newest_issues(s: Session, ids: Sequence[str] | None) -> dict[str, tuple[int, str, datetime]]:
    """``(sequence, fingerprint, issued)`` of each device's newest document: the one whose sequence is its counter.

    A device's counter and its newest document are written in one transaction
    (:func:`_write`), so joining on the counter finds the newest document through the
    primary key, without a ``max(sequence)`` over the device's whole history.
    """
    d, dev = DesiredRow, DeviceRow
    # ``issued`` as the driver returns it, converted once per distinct value (a re-evaluation issues a whole
    # fleet's documents at one time)
    query = select(d.device_id, d.sequence, d.fingerprint, type_coerce(d.issued, String())).join(
        dev, (dev.id == d.device_id) & (dev.last_sequence == d.sequence)
    )
    if ids is not None:
        query = query.where(dev.id.in_(ids))
    dialect = s.get_bind().dialect
    issued = _Converted(d.__table__.c.issued.type.dialect_impl(dialect).result_processor(dialect, None))
    return {device: (sequence, fingerprint, issued(raw)) for device, sequence, fingerprint, raw in s.execute(query)}



def _write(s: Session, issued: Sequence[DesiredRecord]) -> None:
    """The new counters and documents, one ``executemany`` each on the driver's cursor, in ``s``'s transaction.

    Values go through the columns' own bind processors (so SQLite and PostgreSQL store
    exactly what the ORM would), each distinct value once.
    """
    connection = s.connection()
    dialect = connection.dialect
    devices, desired = Base.metadata.tables["devices"], Base.metadata.tables["desired"]
    statements = _RAW.get((dialect.name, dialect.paramstyle))
    if statements is None:  # another database or driver: SQLAlchemy's executemany
        s.execute(
            update(devices).where(devices.c.id == bindparam("b_id")).values(last_sequence=bindparam("b_seq")),
            [{"b_id": d.device_id, "b_seq": d.sequence} for d in issued],
        )
        s.execute(insert(desired), [
            {"device_id": d.device_id, "sequence": d.sequence, "envelope": d.envelope, "fingerprint": d.fingerprint,
             "deployments": builtins.list(d.deployments), "issued": d.issued, "expires": d.expires}
            for d in issued
        ])
        return
    when = _Converted(desired.c.issued.type.dialect_impl(dialect).bind_processor(dialect))
    # PostgreSQL's driver would send a list as an ARRAY: JSON text it is, cast by the statement
    listed_type = desired.c.deployments.type.dialect_impl(dialect)
    as_json = json.dumps if dialect.name == "postgresql" else listed_type.bind_processor(dialect)
    listed = _Converted(as_json)
    cursor = connection.connection.cursor()
    try:
        cursor.executemany(statements[0], [(d.sequence, d.device_id) for d in issued])
        cursor.executemany(statements[1], [
            (d.device_id, d.sequence, d.envelope, d.fingerprint, listed(d.deployments), when(d.issued), when(d.expires))
            for d in issued
        ])
    except dialect.loaded_dbapi.Error as exc:  # the driver's own error: translated as _tx translates SQLAlchemy's
        raise HubStoreError(f"Hub database error while storing {len(issued)} document(s): {exc}") from exc
    finally:
        cursor.close()


_COLUMNS = "INSERT INTO desired (device_id, sequence, envelope, fingerprint, deployments, issued, expires) "
_RAW: dict[tuple[str, str], tuple[str, str]] = {  # (dialect, paramstyle) -> (counter update, document insert)
    ("sqlite", "qmark"): (
        "UPDATE devices SET last_sequence = ? WHERE id = ?",
        _COLUMNS + "VALUES (?, ?, ?, ?, ?, ?, ?)",
    ),
    **{("postgresql", style): (
        "UPDATE devices SET last_sequence = %s WHERE id = %s",
        _COLUMNS + "VALUES (%s, %s, %s, %s, %s::json, %s, %s)",
    ) for style in ("format", "pyformat")},
}


class _Converted:
    """A column's bind processor, applied once per distinct value (a batch shares a few times and lists)."""

    def __init__(self, process: Callable[[Any], Any] | None) -> None:
        self.process = process
        self.done: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        key = value if not isinstance(value, builtins.list) else tuple(value)
        if key not in self.done:
            plain = builtins.list(value) if isinstance(value, tuple) else value
            self.done[key] = plain if self.process is None else self.process(plain)
        return self.done[key]
