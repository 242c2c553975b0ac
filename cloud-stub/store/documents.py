"""Signed desired documents: per-device sequences allocated under the device row lock, and the newest reads.

Invariant: a device's sequences are strictly increasing and never reused, even with
several hub replicas, because the counter on its row is read, incremented and the
document inserted in one transaction that holds the row (ADR 0009).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Subquery, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from edgeship.deployment import MAX_SEQUENCE
from edgeship.hub.errors import HubNotFoundError, SequenceExhaustedError
from edgeship.hub.store.engine import StoreBase
from edgeship.hub.store.models import Base, DesiredRow, DeviceRow
from edgeship.hub.store.records import DesiredRecord, IssueRequest

__all__ = ["DocumentTables"]


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
        self, requests: Sequence[IssueRequest], *, reissue_before: datetime | None = None
    ) -> builtins.list[DesiredRecord]:
        """Issue documents for many devices in one transaction; returns those issued, in request order.

        The device rows are locked first (in id order, so two batches cannot deadlock):
        each fingerprint comparison, counter increment and insert cannot interleave
        with another issue for the same device, so sequences are strictly increasing
        and never reused. A device whose newest document already has the request's
        fingerprint and was issued after ``reissue_before`` is skipped. The counters
        are updated and the documents inserted with one statement each.
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
            latest = _latest_fingerprints(s, ids)
            issued: builtins.list[DesiredRecord] = []
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
                envelope, when, expires = request.sign(sequence)
                issued.append(DesiredRecord(
                    request.device_id, sequence, envelope, request.fingerprint, tuple(request.deployments), when,
                    expires,
                ))
            if issued:
                devices, desired = Base.metadata.tables["devices"], Base.metadata.tables["desired"]
                s.execute(
                    update(devices).where(devices.c.id == bindparam("b_id")).values(last_sequence=bindparam("b_seq")),
                    [{"b_id": d.device_id, "b_seq": d.sequence} for d in issued],
                )
                s.execute(insert(desired), [
                    {"device_id": d.device_id, "sequence": d.sequence, "envelope": d.envelope,
                     "fingerprint": d.fingerprint, "deployments": builtins.list(d.deployments), "issued": d.issued,
                     "expires": d.expires}
                    for d in issued
                ])
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
    query = select(DesiredRow.device_id, DesiredRow.fingerprint, DesiredRow.issued)
    return {r.device_id: (r.fingerprint, r.issued) for r in s.execute(query.join(*_newest(ids)))}
