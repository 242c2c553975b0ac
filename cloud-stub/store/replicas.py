"""The hub replicas that share a database, by broker client id, so a survivor can find a dead one's session.

Each replica on PostgreSQL registers its MQTT client id here at start and holds the
lease ``replica:<client id>`` for as long as it lives (``lease.py``). A row whose lease
anyone else can take belongs to a replica that is gone: the replica that holds the
``coordinator`` lease then drains that replica's broker session (``bridge/adopt.py``)
and deletes the row (ADR 0037). A replica that comes back registers again.
"""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from edgeship.hub.store.engine import StoreBase
from edgeship.hub.store.models import Base

__all__ = ["ReplicaRow", "ReplicaTable", "replica_lease"]


def replica_lease(client_id: str) -> str:
    """The lease a live replica holds: taking it proves the replica is gone."""
    return f"replica:{client_id}"


class ReplicaRow(Base):
    """A hub replica's broker client id, and when it last registered."""

    __tablename__ = "hub_replicas"
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    protocol: Mapped[str] = mapped_column(String(8))  # "5": its session holds shared subscriptions
    started: Mapped[datetime]


class ReplicaTable:
    """``hub_replicas`` over a store's engine (same transactions, same errors)."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store

    def register(self, client_id: str, protocol: str, started: datetime) -> None:
        with self.store._tx() as s:
            row = s.get(ReplicaRow, client_id, with_for_update=True)
            if row is None:
                s.add(ReplicaRow(client_id=client_id, protocol=protocol, started=started))
            else:
                row.protocol, row.started = protocol, started

    def list(self) -> builtins.list[tuple[str, str]]:
        """``(client id, protocol)`` of every registered replica."""
        with self.store._tx() as s:
            return [(r.client_id, r.protocol) for r in s.scalars(select(ReplicaRow).order_by(ReplicaRow.client_id))]

    def remove(self, client_id: str) -> None:
        with self.store._tx() as s:
            s.execute(delete(ReplicaRow).where(ReplicaRow.client_id == client_id))
