"""The delivery outbox: a table of pending re-evaluation intents (issue 13, ADR 0019).

Every change that can alter what a device must run writes a row here in its own
transaction; the hub deletes the row once the documents it implies are stored, and
finishes leftover rows at start. A new, empty table: existing rows elsewhere are
untouched, so the revision is additive (old replicas keep running; they just write no
intents).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pending_reevaluation",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("device_ids", sa.JSON(), nullable=True),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("pending_reevaluation")
