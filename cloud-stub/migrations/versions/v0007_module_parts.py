"""Module parts (issue 16, ADR 0028): which content-addressed parts each stored module names.

A schemaVersion 2 module's parts (wheels, its source, model chunks, image layers) are
blobs like its bundle; the hub serves a blob only when a stored module names it, and
this table is how it knows for parts. One new table; nothing existing changes, so
hubs of the previous revision keep running beside it (they serve bundles only).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "module_parts",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["modules.name", "modules.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name", "version", "digest"),
    )
    op.create_index("ix_module_parts_digest", "module_parts", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_module_parts_digest", table_name="module_parts")
    op.drop_table("module_parts")
