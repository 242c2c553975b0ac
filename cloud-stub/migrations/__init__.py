"""The hub database's schema history (Alembic): one revision per schema change, applied at hub start.

``versions/`` holds the revisions, numbered ``0001``, ``0002``, … (the revision id is the
number; ``down_revision`` is the one before). ``0001`` is the schema edgeship 0.1.0 made
with ``create_all`` before migrations existed: :func:`edgeship.hub.store.schema.upgrade`
stamps such a database as ``0001`` and upgrades it from there. A revision never imports
the models (they move on; a revision must keep meaning what it meant when it was written).

Add a revision after changing a model (``docs/hub.md``, "Schema migrations")::

    python -m edgeship.hub.migrations revision "add the outbox table"

writes ``versions/v000N_add_the_outbox_table.py`` with the operations Alembic's
autogenerate finds between the models and the current head; read and adjust it, then
``tests/hub/test_migrations.py`` checks that the models and the migrations agree.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BASELINE", "LOCATION"]

LOCATION = Path(__file__).resolve().parent  # Alembic's script_location: env.py, script.py.mako, versions/
BASELINE = "0001"  # the revision a pre-migration (create_all) hub database is stamped with
