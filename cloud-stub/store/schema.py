"""Bring a hub database to the newest schema at start: Alembic revisions, once, under a lock.

:func:`upgrade` is what :class:`~edgeship.hub.store.HubStore` calls instead of
``create_all``. It decides between four cases, all inside one transaction:

- at the newest revision: nothing to do (checked first without the lock: one query,
  which is every start but the first after an upgrade);
- empty (no hub tables): run every revision from ``0001``;
- the tables of edgeship 0.1.0 but no ``alembic_version`` (made by ``create_all``
  before migrations): stamp ``0001``, then run the revisions after it;
- a revision this edgeship does not know (a newer edgeship upgraded it): refuse, and
  touch nothing, because the running code would not match the schema.

Two hubs may start at once on one database. On PostgreSQL the transaction first takes
a transaction-scoped advisory lock (:data:`LOCK_KEY`), so the second hub waits, then
finds the first one's work done; all revisions and the version stamp commit together
(transactional DDL), so a failure leaves the database as it was. On SQLite the
transaction starts with ``BEGIN IMMEDIATE`` (the store's engine does that for every
transaction), which holds the database's write lock for the same effect.
"""

from __future__ import annotations

from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, func, inspect, select

from edgeship.errors import EdgeshipError
from edgeship.hub.migrations import BASELINE, LOCATION

__all__ = ["BASELINE_TABLES", "LOCK_KEY", "SchemaError", "alembic_config", "current_revision", "head", "upgrade"]

LOCK_KEY = 0x6564_6765_7368_6970 & 0x7FFF_FFFF_FFFF_FFFF  # pg_advisory_xact_lock key: 'edgeship' as a bigint
BASELINE_TABLES = frozenset({
    "credentials", "deployment_modules", "deployments", "desired", "devices", "modules", "presence", "reported",
    "telemetry", "tokens",
})  # what edgeship 0.1.0's create_all made; revision 0001 builds exactly these


class SchemaError(EdgeshipError):
    """The hub database's schema is not one this edgeship can use or upgrade."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the hub's revisions; ``connection`` is what ``env.py`` migrates."""
    config = Config()
    config.set_main_option("script_location", str(LOCATION))
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this edgeship ships."""
    newest = _script().get_current_head()
    assert newest is not None, "the hub ships at least the baseline revision"
    return newest


def current_revision(connection: Connection) -> str | None:
    """The database's revision (``None``: no ``alembic_version``, so empty or made before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Upgrade the database behind ``engine`` to :func:`head`; returns the revision it started at (or "none")."""
    target = head()
    with engine.connect() as connection:
        found = current_revision(connection)
        connection.rollback()
        if found == target:
            return found
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
            found = current_revision(connection)  # again: another hub may have upgraded it while we waited
            if found is None:
                _stamp_if_made_before_migrations(connection)
            elif found != target:
                _need_known(found, target)
            command.upgrade(alembic_config(connection), "head")
    return found or "none"


def _stamp_if_made_before_migrations(connection: Connection) -> None:
    tables = set(inspect(connection).get_table_names())
    present = tables & BASELINE_TABLES
    if not present:
        return
    missing = BASELINE_TABLES - tables
    if missing:
        raise SchemaError(
            f"The hub database has some of the hub's tables ({', '.join(sorted(present))}) but not "
            f"{', '.join(sorted(missing))}, and no migration history: no edgeship release made it. Point --db at "
            "an empty database or at a hub database, or restore one from a backup."
        )
    MigrationContext.configure(connection).stamp(_script(), BASELINE)


def _need_known(found: str, target: str) -> None:
    try:
        _script().get_revision(found)
    except CommandError as exc:
        raise SchemaError(
            f"The hub database is at schema revision {found!r}, which this edgeship does not know (its newest is "
            f"{target!r}): a newer edgeship upgraded it. Run that newer edgeship, or restore a backup made before "
            "the upgrade."
        ) from exc
