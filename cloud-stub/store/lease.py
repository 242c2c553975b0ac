"""Leases: periodic work on exactly one hub replica at a time, with fail-over (ADR 0037).

On PostgreSQL a lease is a session-level advisory lock held on a connection of its
own (not the store's pool): the replica that holds the lock does the work, and the
lock goes when its connection goes. A replica killed with SIGKILL closes its socket,
so the server drops the lock at once; a replica cut off by the network loses it when
TCP keep-alives give up (:data:`KEEPALIVE`). A replica that finds its connection
broken knows it no longer holds anything and says so (:meth:`Leases.check`) before it
does the next piece of work.

On SQLite there is one hub process per database file, so :class:`LocalLeases` grants
every lease at once and never loses it: the laptop path runs as before.

A lease's key is the pair ``(LEASE_CLASS, hashtext(name))`` of PostgreSQL's
two-integer advisory lock, apart from the single bigint key the schema upgrade takes
(``schema.LOCK_KEY``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Protocol

from sqlalchemy.engine import make_url

__all__ = ["KEEPALIVE", "LEASE_CLASS", "AdvisoryLeases", "Leases", "LocalLeases", "leases_for", "libpq_url"]

LEASE_CLASS = 0x6564_6765  # 'edge': the first key of every edgeship lease
# TCP keep-alives (seconds): a replica cut off from the database loses its leases within about 11 s
KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
CONNECT_TIMEOUT = 5  # seconds for the lease connection to open

log = logging.getLogger("edgeship.hub.lease")


class Leases(Protocol):
    """Named leases of one replica; every method is called from one thread (the replica's coordinator)."""

    def acquire(self, name: str, *, wait: bool = False) -> bool:
        """Take ``name`` if nobody holds it (``wait``: block until it is free); True if this replica holds it."""

    def release(self, name: str) -> None:
        """Give ``name`` back (nothing if not held)."""

    def check(self) -> bool:
        """True while the leases held so far are still held; False (and nothing held any more) once lost."""

    def held(self, name: str) -> bool:
        """Whether this replica holds ``name`` as of the last :meth:`acquire` or :meth:`check`."""

    def close(self) -> None:
        """Give every lease back."""


class LocalLeases:
    """One process per database (SQLite): every lease is granted and never lost."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, name: str, *, wait: bool = False) -> bool:
        self._held.add(name)
        return True

    def release(self, name: str) -> None:
        self._held.discard(name)

    def check(self) -> bool:
        return True

    def held(self, name: str) -> bool:
        return name in self._held

    def close(self) -> None:
        self._held.clear()


def libpq_url(url: str) -> str:
    """A ``postgresql+psycopg://`` SQLAlchemy URL as the libpq URL psycopg connects with."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class AdvisoryLeases:
    """Session-level advisory locks on one dedicated psycopg connection (autocommit).

    The connection is opened on the first :meth:`acquire` and again after it was lost;
    losing it loses every lease on it, which :meth:`check` reports.
    """

    def __init__(self, url: str, *, application: str = "edgeship-hub") -> None:
        self.url = libpq_url(url)
        self.application = application[:63]
        self._conn: Any = None
        self._held: set[str] = set()
        self._lock = threading.Lock()  # the coordinator's thread and stop() may meet here

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._held.clear()
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                         application_name=self.application, **KEEPALIVE)
        return self._conn

    def acquire(self, name: str, *, wait: bool = False) -> bool:
        import psycopg

        with self._lock:
            if name in self._held and self._alive():
                return True
            try:
                conn = self._connection()
                if wait:
                    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LEASE_CLASS, name))
                    got = True
                else:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LEASE_CLASS, name)).fetchone()
                    got = bool(row and row[0])
            except psycopg.Error as exc:
                log.warning("could not ask the database for lease %r (%s); not holding it", name, exc)
                self._drop()
                return False
            if got:
                self._held.add(name)
            return got

    def release(self, name: str) -> None:
        import psycopg

        with self._lock:
            if name not in self._held:
                return
            self._held.discard(name)
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LEASE_CLASS, name))
            except psycopg.Error:
                self._drop()

    def check(self) -> bool:
        with self._lock:
            return self._alive()

    def _alive(self) -> bool:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._held.clear()
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            log.warning("lost the lease connection to the database; every lease of this replica is gone")
            self._drop()
            return False
        return True

    def held(self, name: str) -> bool:
        return name in self._held

    def _drop(self) -> None:
        self._held.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; it is gone either way
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def leases_for(url: str, *, application: str = "edgeship-hub") -> Leases:
    """Advisory locks on PostgreSQL; on SQLite (one process per file) leases that are always granted."""
    if url.startswith("postgresql"):
        return AdvisoryLeases(url, application=application)
    return LocalLeases()
