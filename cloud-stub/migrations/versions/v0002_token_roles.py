"""Operator tokens get a role, an optional expiry, revocation and a last-used time (issue 12).

Existing tokens become ``operator`` (the server default), never expire, are not
revoked and have not been used yet: every token keeps the rights it had.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("tokens", sa.Column("role", sa.String(length=16), nullable=False, server_default="operator"))
    op.add_column("tokens", sa.Column("expires", _TIME, nullable=True))
    op.add_column("tokens", sa.Column("revoked_at", _TIME, nullable=True))
    op.add_column("tokens", sa.Column("last_used", _TIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        for column in ("last_used", "revoked_at", "expires", "role"):
            batch.drop_column(column)
