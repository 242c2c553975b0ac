"""Baseline: the schema edgeship 0.1.0 made with ``create_all`` (before migrations).

Frozen: this is what every hub database made before migrations holds, table for table
(``tests/data/hub-schema/0.1.0-*.sql`` is that release's DDL, and a test checks this
revision builds the same schema). A database with these tables and no
``alembic_version`` is stamped ``0001`` instead of running this. Times are
``TIMESTAMP WITH TIME ZONE`` (the models' ``UTCDateTime`` stores UTC in it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_credentials_device_id"), "credentials", ["device_id"], unique=False)
    op.create_index(op.f("ix_credentials_revoked"), "credentials", ["revoked"], unique=False)
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("target_condition", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "modules",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("envelope", sa.JSON(), nullable=False),
        sa.Column("manifest_digest", sa.String(length=71), nullable=False),
        sa.Column("bundle_digest", sa.String(length=71), nullable=False),
        sa.Column("image_digest", sa.String(length=71), nullable=True),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "tokens",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("digest"),
    )
    op.create_table(
        "deployment_modules",
        sa.Column("deployment_id", sa.String(length=128), nullable=False),
        sa.Column("module_name", sa.String(length=128), nullable=False),
        sa.Column("module_version", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["module_name", "module_version"],
            ["modules.name", "modules.version"],
        ),
        sa.PrimaryKeyConstraint("deployment_id", "module_name"),
    )
    op.create_table(
        "desired",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("deployments", sa.JSON(), nullable=False),
        sa.Column("issued", _TIME, nullable=False),
        sa.Column("expires", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "sequence"),
    )
    op.create_table(
        "presence",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "reported",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("received", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "telemetry",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("received", _TIME, nullable=False),
        sa.Column("batch", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_telemetry_device_id"), "telemetry", ["device_id"], unique=False)


def downgrade() -> None:
    for table in (
        "telemetry",
        "reported",
        "presence",
        "desired",
        "deployment_modules",
        "tokens",
        "modules",
        "devices",
        "deployments",
        "credentials",
    ):
        op.drop_table(table)
