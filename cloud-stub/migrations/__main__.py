"""``python -m edgeship.hub.migrations revision "what changes"``: write the next revision from the models.

Builds a throwaway SQLite database at the current head, lets Alembic's autogenerate
compare it with the models, and writes ``versions/v000N_<slug>.py`` (N = head + 1)
beside the others. Read the result before committing it: autogenerate does not see
renames (it writes a drop and an add) or data that must move, and on SQLite a change
to an existing column needs ``op.batch_alter_table``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "revision" or not argv[1].strip():
        print('usage: python -m edgeship.hub.migrations revision "what the revision changes"', file=sys.stderr)
        return 2
    from alembic import command
    from sqlalchemy import create_engine

    from edgeship.hub.store import schema

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'head.db'}")
        try:
            schema.upgrade(engine)
            with engine.connect() as connection, connection.begin():
                script = command.revision(
                    schema.alembic_config(connection), message=argv[1].strip(), autogenerate=True,
                    rev_id=f"{int(schema.head()) + 1:04d}",
                )
        finally:
            engine.dispose()
    paths = [s.path for s in (script if isinstance(script, list) else [script]) if s is not None]
    print("\n".join(paths) or "no revision written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
