"""The delivery outbox: intents to re-evaluate devices, committed with the change that calls for them.

Why: a change (a deployment created, a device re-tagged, ...) and the documents it
implies used to be two steps, so a hub killed between them kept the change and sent
nothing until its refresh timer, and a retry answered 409. Now every such change
writes a :class:`PendingReevaluationRow` in its own transaction (:func:`record_intent`,
called by :class:`~edgeship.hub.store.HubStore`), and the service deletes the row only
after the re-evaluation stored every document (``Issuing.drain_pending`` in ``edgeship.hub.services``). A hub
that dies in between finds the row at start and finishes the work.

Invariants:

- an intent exists from the commit of its change until every document the change
  implies is stored (and handed to the publisher, which re-sends all newest documents
  on every broker connect anyway);
- draining is idempotent: re-evaluation issues a document only when a device's module
  set changed (or ``force``), so draining an intent twice, or two hubs draining the same
  intent at once, stores each document once;
- :meth:`Outbox.finish` deletes exactly the rows that were read before the work began,
  so an intent committed meanwhile is never dropped unserved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from edgeship.hub.store.engine import StoreBase
from edgeship.hub.store.models import PendingReevaluationRow

__all__ = ["IntentRecord", "Outbox", "PendingWork", "merge", "record_intent"]


@dataclass(frozen=True)
class IntentRecord:
    id: int
    reason: str
    device_ids: tuple[str, ...] | None  # None: every device
    force: bool
    created: datetime


@dataclass(frozen=True)
class PendingWork:
    """Several intents as one re-evaluation: ``device_ids`` None means all devices."""

    intent_ids: tuple[int, ...]
    device_ids: tuple[str, ...] | None
    force: bool


def record_intent(
    session: Session, reason: str, device_ids: Iterable[str] | None, *, force: bool = False,
    when: datetime | None = None,
) -> PendingReevaluationRow:
    """Add an intent inside the caller's transaction (the change it belongs to commits with it, or neither)."""
    ids = None if device_ids is None else sorted(set(device_ids))
    row = PendingReevaluationRow(reason=reason[:64], device_ids=ids, force=force,
                                 created=when or datetime.now(timezone.utc))  # fmt: skip
    session.add(row)
    return row


def merge(intents: Sequence[IntentRecord]) -> PendingWork | None:
    """One re-evaluation that serves every intent (pure): the union of their devices, all if any says all."""
    if not intents:
        return None
    everyone = any(i.device_ids is None for i in intents)
    devices: set[str] = set()
    for intent in intents:
        devices.update(intent.device_ids or ())
    return PendingWork(
        tuple(i.id for i in intents), None if everyone else tuple(sorted(devices)), any(i.force for i in intents)
    )


class Outbox:
    """The ``pending_reevaluation`` table over a :class:`HubStore`'s engine (same transactions, same errors)."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store

    def add(self, reason: str, device_ids: Iterable[str] | None, *, force: bool = False) -> int:
        """An intent on its own (a trust-root rotation, whose change lives in files, writes it first); its id."""
        with self.store._tx() as s:
            row = record_intent(s, reason, device_ids, force=force)
            s.flush()
            return int(row.id)

    def pending(self) -> list[IntentRecord]:
        """Every intent not yet finished, oldest first."""
        with self.store._tx() as s:
            rows = s.scalars(select(PendingReevaluationRow).order_by(PendingReevaluationRow.id))
            return [
                IntentRecord(r.id, r.reason, None if r.device_ids is None else tuple(r.device_ids), bool(r.force),
                             r.created)
                for r in rows
            ]

    def finish(self, intent_ids: Iterable[int]) -> int:
        """Delete the intents whose work is done; returns how many were still there (another hub may have
        finished some)."""
        ids = list(intent_ids)
        if not ids:
            return 0
        with self.store._tx() as s:
            result = s.execute(delete(PendingReevaluationRow).where(PendingReevaluationRow.id.in_(ids)))
            return int(getattr(result, "rowcount", 0) or 0)
