"""Hub replicas (issue 21): the broker client id of each hub process sharing the database.

One new table; nothing existing changes, so hubs of the previous revision keep running
beside it (they just do not register).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_replicas",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )


def downgrade() -> None:
    op.drop_table("hub_replicas")
