"""The hub's tables (SQLAlchemy 2.0), portable between SQLite and PostgreSQL.

Every change to a table here needs a revision in ``edgeship.hub.migrations``
(``docs/hub.md``, "Schema migrations"); ``tests/hub/test_migrations.py`` fails until
the models and the revisions agree.

Only portable types: ``JSON`` (``json`` on PostgreSQL, text on SQLite), strings,
integers and :class:`UTCDateTime`, which stores aware datetimes and always hands
back UTC (SQLite keeps no zone, and the layering tiebreak compares creation times).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, ForeignKeyConstraint, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "DeploymentModuleRow",
    "DeploymentRow",
    "DesiredRow",
    "DeviceRow",
    "ModuleRow",
    "PendingReevaluationRow",
    "ReportedRow",
    "RolloutDeviceRow",
    "RolloutEventRow",
    "RolloutRow",
    "TokenRow",
    "UTCDateTime",
]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the hub stores aware datetimes only (pass tzinfo=timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class DeviceRow(Base):
    """A device and its per-device sequence counter (the last sequence the hub issued)."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime]
    last_sequence: Mapped[int] = mapped_column(Integer, default=0)


class ModuleRow(Base):
    """A verified module: its release-signed envelope and the blobs its manifest names."""

    __tablename__ = "modules"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_digest: Mapped[str] = mapped_column(String(71))
    bundle_digest: Mapped[str] = mapped_column(String(71))
    image_digest: Mapped[str | None] = mapped_column(String(71), nullable=True)
    variant: Mapped[str] = mapped_column(String(64), default="fp32")
    created: Mapped[datetime]


class DeploymentRow(Base):
    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    target_condition: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime]


class DeploymentModuleRow(Base):
    """One module reference of a deployment, with the per-device settings it asks for."""

    __tablename__ = "deployment_modules"
    deployment_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    module_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    module_version: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (
        ForeignKeyConstraint(["module_name", "module_version"], ["modules.name", "modules.version"]),
    )


class DesiredRow(Base):
    """Every document the hub signed, by device and sequence; the newest is the device's desired state.

    ``fingerprint`` is the canonical text of what the document asks for (module refs,
    settings, contributing deployments), so re-evaluation issues a new document only
    when that changes.
    """

    __tablename__ = "desired"
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    envelope: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(Text)
    deployments: Mapped[list[str]] = mapped_column(JSON, default=list)
    issued: Mapped[datetime]
    expires: Mapped[datetime]


class ReportedRow(Base):
    """The device's last reported state (retained on MQTT, so only the newest matters)."""

    __tablename__ = "reported"
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    received: Mapped[datetime]


class TokenRow(Base):
    """An operator token, stored as the sha256 of its text (the token itself is shown once).

    ``role`` is ``operator`` or ``read-only`` (:data:`edgeship.hub.store.tokens.ROLES`);
    ``expires`` ``None`` never expires; a revoked token keeps its row (``revoked_at``) so
    ``hub token list`` shows who had access; ``last_used`` is refreshed at most once a minute.
    """

    __tablename__ = "tokens"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime]
    role: Mapped[str] = mapped_column(String(16), default="operator", server_default="operator")
    expires: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used: Mapped[datetime | None] = mapped_column(nullable=True)



class PendingReevaluationRow(Base):
    """An intent to re-evaluate devices, written in the same transaction as the change that calls for it.

    The hub's delivery outbox (ADR 0019): a change to devices or deployments commits
    together with a row here, and the row is deleted only after the re-evaluation it asks
    for stored (and handed to the publisher) every document it implies. A hub killed in
    between finds the row at its next start and finishes the work. Rows hold intents, not
    signed documents, so a change to 10,000 devices costs one small row.
    ``device_ids`` ``None`` means every device; ``force`` re-signs documents whose
    content did not change (a trust-root rotation to another hub key).
    """

    __tablename__ = "pending_reevaluation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reason: Mapped[str] = mapped_column(String(64))
    device_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime]


class RolloutRow(Base):
    """A deployment's staged rollout: its policy and where it stands (``docs/rollouts.md``).

    Written in the same transaction as its deployment, so no device ever sees a staged
    deployment without its rollout; deleted with it. ``wave`` is the newest wave out
    (0-based); ``wave_started`` when it went out (or was resumed), which the wave
    timeout counts from.
    """

    __tablename__ = "rollouts"
    deployment_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(32))
    wave: Mapped[int] = mapped_column(Integer, default=0)
    wave_count: Mapped[int] = mapped_column(Integer, default=1)
    wave_started: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text, default="")
    tripped: Mapped[list[str]] = mapped_column(JSON, default=list)
    started: Mapped[datetime]
    updated: Mapped[datetime]


class RolloutDeviceRow(Base):
    """One device of a rollout: its wave, when the release reached it, and what to fall back to.

    ``fallback`` is the module (name -> version and settings) the device ran healthily
    before the release, captured when its wave went out; ``pinned`` is what it was
    re-issued as last known-good after an abort (kept while the aborted deployment exists).
    """

    __tablename__ = "rollout_devices"
    deployment_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("rollouts.deployment_id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    issued_sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    issued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(nullable=True)
    fallback: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pinned: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RolloutEventRow(Base):
    """A rollout's state change: when, who (a token's name, or ``hub``), what, why."""

    __tablename__ = "rollout_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
