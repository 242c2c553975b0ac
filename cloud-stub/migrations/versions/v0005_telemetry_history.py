"""Telemetry history per device, module and module version (issue 15): one row per minute bucket.

One new table; nothing existing changes. Telemetry stored before this revision is not
back-filled: its samples name no module version (schemaVersion 1).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "telemetry_history",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("module", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("bucket", _TIME, nullable=False),
        sa.Column("first", _TIME, nullable=False),
        sa.Column("last", _TIME, nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("server_errors", sa.BigInteger(), nullable=False),
        sa.Column("client_errors", sa.BigInteger(), nullable=False),
        sa.Column("p99_weighted", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "module", "version", "bucket"),
    )


def downgrade() -> None:
    op.drop_table("telemetry_history")
