"""A bcrypt hash beside the Mosquitto ``$7$`` one for each password credential (issue 21, ADR 0039).

NATS checks bcrypt hashes only, so the hub keeps one of every device password it
issues from now on, and ``edgeship hub broker-config --engine nats`` reads them. One
nullable column: rows issued before it get NULL (the plaintext is gone, no hash can be
made from the ``$7$`` one) and get a bcrypt hash at their next rotation. Hubs of the
previous revision that are already running keep working beside it: they never name the
column, so a password they issue has no bcrypt hash until a newer hub rotates it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("credentials", sa.Column("bcrypt_hash", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("bcrypt_hash")
