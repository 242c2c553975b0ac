"""The hub store's engine and transactions: one URL, SQLite or PostgreSQL, one short transaction per call.

SQLite (the embedded default) runs in WAL mode with foreign keys on, and every
transaction starts with ``BEGIN IMMEDIATE``: SQLite's deferred transactions would
let two writers read the same sequence counter and then fail to upgrade their
locks. PostgreSQL locks rows (``SELECT ... FOR UPDATE``) instead.

:class:`StoreBase` is what every table family (``devices.py``, ``catalog.py``,
``documents.py``, ``reported.py``, and the stores beside them: tokens, outbox,
telemetry, credentials) runs its statements through, so they share one engine,
one transaction discipline and one error translation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgeship.errors import EdgeshipError
from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError
from edgeship.hub.store import schema

__all__ = ["HubStoreError", "StoreBase", "need", "sqlite_url"]


class HubStoreError(EdgeshipError):
    """The hub's database could not be opened or a statement failed."""


def sqlite_url(workspace_root: Path) -> str:
    """The embedded default: ``hub.db`` beside the workspace's ``registry.db``."""
    return f"sqlite:///{Path(workspace_root) / 'hub.db'}"


class StoreBase:
    """The engine over one URL (``sqlite:///...`` or ``postgresql+psycopg://...``) and its transactions.

    Opening it upgrades the database to the newest schema first (:func:`schema.upgrade`);
    ``upgraded_from`` is the revision it found (``"none"``: empty or made before migrations).
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            self.engine: Engine = _engine(url, echo)
        except SQLAlchemyError as exc:
            raise HubStoreError(f"Cannot open the hub database {_safe(url)}: {exc}") from exc
        try:
            self.upgraded_from = schema.upgrade(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise HubStoreError(f"Cannot open or upgrade the hub database {_safe(url)}: {exc}") from exc
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as exc:
            raise AlreadyExistsError(f"The hub database refused the change: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise HubStoreError(f"Hub database error: {exc}") from exc


def need(row: Any, what: str) -> Any:
    """``row``, or a HubNotFoundError naming ``what`` when it is None."""
    if row is None:
        raise HubNotFoundError(f"No {what} on the hub.")
    return row


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def _engine(url: str, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)

