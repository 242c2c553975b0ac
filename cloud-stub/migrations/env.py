"""Alembic's environment for the hub: runs revisions on the connection the caller hands over.

The hub never lets Alembic open its own connection: :mod:`edgeship.hub.store.schema`
(at hub start) and ``python -m edgeship.hub.migrations`` (a developer adding a revision)
put an open connection, already inside the transaction that holds the migration lock, in
``config.attributes["connection"]``. Alembic then runs every pending revision and the
version stamp inside that one transaction (transactional DDL on SQLite and PostgreSQL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from edgeship.hub.store.models import Base


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection) or context.is_offline_mode():
        raise RuntimeError(
            "The hub's migrations run on a connection the hub opens; upgrade a database by starting the hub "
            "(edgeship hub serve --db URL) or with edgeship.hub.store.schema.upgrade(engine)."
        )
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


_run()
