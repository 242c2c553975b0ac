"""Staged rollouts (issue 14): a rollout per deployment, its devices, and its events.

Three new tables; nothing existing changes, so the revision is additive: deployments
made before it have no rollout and keep reaching every targeted device at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("deployment_id", sa.String(length=128), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("wave_count", sa.Integer(), nullable=False),
        sa.Column("wave_started", _TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("tripped", sa.JSON(), nullable=False),
        sa.Column("started", _TIME, nullable=False),
        sa.Column("updated", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment_id"),
    )
    op.create_table(
        "rollout_devices",
        sa.Column("deployment_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("issued_sequence", sa.Integer(), nullable=True),
        sa.Column("issued_at", _TIME, nullable=True),
        sa.Column("applied_at", _TIME, nullable=True),
        sa.Column("fallback", sa.JSON(), nullable=True),
        sa.Column("pinned", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["rollouts.deployment_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment_id", "device_id"),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.String(length=128), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rollout_events_deployment_id"), "rollout_events", ["deployment_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_rollout_events_deployment_id"), table_name="rollout_events")
    op.drop_table("rollout_events")
    op.drop_table("rollout_devices")
    op.drop_table("rollouts")
