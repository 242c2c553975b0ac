"""``HubStore``: the hub's persistent state behind plain records, on SQLite or PostgreSQL.

The service layer never sees an ORM object: every method opens its own short
transaction and returns frozen records, so a caller cannot touch the database
outside a transaction by accident.

SQLite (the embedded default) runs in WAL mode with foreign keys on, and every
transaction starts with ``BEGIN IMMEDIATE``: SQLite's deferred transactions would
let two writers read the same sequence counter and then fail to upgrade their
locks. PostgreSQL locks the device row (``SELECT ... FOR UPDATE``) instead.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgeship.errors import EdgeshipError
from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError
from edgeship.hub.store.models import (
    Base,
    DeploymentModuleRow,
    DeploymentRow,
    DesiredRow,
    DeviceRow,
    ModuleRow,
    ReportedRow,
    TokenRow,
)

__all__ = [
    "DeploymentRecord",
    "DesiredRecord",
    "DeviceRecord",
    "HubStore",
    "HubStoreError",
    "ModuleRecord",
    "ModuleRefRecord",
    "ReportedRecord",
    "sqlite_url",
]


class HubStoreError(EdgeshipError):
    """The hub's database could not be opened or a statement failed."""


def sqlite_url(workspace_root: Path) -> str:
    """The embedded default: ``hub.db`` beside the workspace's ``registry.db``."""
    return f"sqlite:///{Path(workspace_root) / 'hub.db'}"


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    tags: dict[str, Any]
    created: datetime
    last_sequence: int


@dataclass(frozen=True)
class ModuleRecord:
    name: str
    version: int
    envelope: dict[str, Any]
    manifest_digest: str
    bundle_digest: str
    image_digest: str | None
    variant: str
    created: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModuleRefRecord:
    name: str
    version: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class DeploymentRecord:
    id: str
    target_condition: str
    priority: int
    created: datetime
    modules: tuple[ModuleRefRecord, ...]


@dataclass(frozen=True)
class DesiredRecord:
    device_id: str
    sequence: int
    envelope: str
    fingerprint: str
    deployments: tuple[str, ...]
    issued: datetime
    expires: datetime


@dataclass(frozen=True)
class ReportedRecord:
    device_id: str
    state: dict[str, Any]
    received: datetime


def _device(row: DeviceRow) -> DeviceRecord:
    return DeviceRecord(row.id, dict(row.tags or {}), row.created, row.last_sequence)


def _module(row: ModuleRow) -> ModuleRecord:
    return ModuleRecord(
        row.name, row.version, dict(row.envelope), row.manifest_digest, row.bundle_digest, row.image_digest,
        row.variant, row.created,
    )


def _desired(row: DesiredRow) -> DesiredRecord:
    return DesiredRecord(
        row.device_id, row.sequence, row.envelope, row.fingerprint, tuple(row.deployments or ()), row.issued,
        row.expires,
    )


class HubStore:
    """The hub's tables over one engine URL (``sqlite:///...`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            self.engine: Engine = _engine(url, echo)
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise HubStoreError(f"Cannot open the hub database {_safe(url)}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as exc:
            raise AlreadyExistsError(f"The hub database refused the change: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise HubStoreError(f"Hub database error: {exc}") from exc

    # devices -----------------------------------------------------------------
    def add_device(self, device_id: str, tags: dict[str, Any], created: datetime) -> DeviceRecord:
        with self._tx() as s:
            if s.get(DeviceRow, device_id) is not None:
                raise AlreadyExistsError(f"Device {device_id!r} exists already; update its tags instead.")
            row = DeviceRow(id=device_id, tags=tags, created=created, last_sequence=0)
            s.add(row)
            s.flush()
            return _device(row)

    def set_tags(self, device_id: str, tags: dict[str, Any]) -> DeviceRecord:
        with self._tx() as s:
            row = _need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            row.tags = tags
            s.flush()
            return _device(row)

    def get_device(self, device_id: str) -> DeviceRecord:
        with self._tx() as s:
            return _device(_need(s.get(DeviceRow, device_id), f"device {device_id!r}"))

    def list_devices(self, ids: Iterable[str] | None = None) -> builtins.list[DeviceRecord]:
        query = select(DeviceRow).order_by(DeviceRow.id)
        if ids is not None:
            query = query.where(DeviceRow.id.in_(builtins.list(ids)))
        with self._tx() as s:
            return [_device(row) for row in s.scalars(query)]

    # modules -----------------------------------------------------------------
    def add_module(self, record: ModuleRecord) -> tuple[ModuleRecord, bool]:
        """Store a module; ``(existing, False)`` when the identical module is already there."""
        with self._tx() as s:
            row = s.get(ModuleRow, (record.name, record.version))
            if row is not None:
                if row.manifest_digest != record.manifest_digest:
                    raise AlreadyExistsError(
                        f"Module {record.ref} exists on the hub with a different manifest; "
                        "package a new version instead of replacing one."
                    )
                return _module(row), False
            s.add(ModuleRow(**record.__dict__))
            return record, True

    def get_module(self, name: str, version: int) -> ModuleRecord:
        with self._tx() as s:
            return _module(_need(s.get(ModuleRow, (name, version)), f"module {name}:{version}"))

    def list_modules(self, name: str | None = None) -> builtins.list[ModuleRecord]:
        query = select(ModuleRow).order_by(ModuleRow.name, ModuleRow.version)
        if name is not None:
            query = query.where(ModuleRow.name == name)
        with self._tx() as s:
            return [_module(row) for row in s.scalars(query)]

    def has_blob(self, digest: str) -> bool:
        """True when a stored module names ``digest`` (``sha256:<hex>``) as its bundle or image."""
        query = select(func.count()).select_from(ModuleRow).where(
            (ModuleRow.bundle_digest == digest) | (ModuleRow.image_digest == digest)
        )
        with self._tx() as s:
            return bool(s.scalar(query))

    # deployments -------------------------------------------------------------
    def add_deployment(self, record: DeploymentRecord) -> DeploymentRecord:
        with self._tx() as s:
            if s.get(DeploymentRow, record.id) is not None:
                raise AlreadyExistsError(f"Deployment {record.id!r} exists already; delete it or pick another name.")
            for ref in record.modules:
                _need(s.get(ModuleRow, (ref.name, ref.version)), f"module {ref.name}:{ref.version}")
            s.add(DeploymentRow(
                id=record.id, target_condition=record.target_condition, priority=record.priority,
                created=record.created,
            ))
            s.flush()
            for ref in record.modules:
                s.add(DeploymentModuleRow(
                    deployment_id=record.id, module_name=ref.name, module_version=ref.version, settings=ref.settings,
                ))
            return record

    def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        with self._tx() as s:
            row = _need(s.get(DeploymentRow, deployment_id), f"deployment {deployment_id!r}")
            return self._deployment(s, row)

    def list_deployments(self) -> builtins.list[DeploymentRecord]:
        with self._tx() as s:
            return [self._deployment(s, row) for row in s.scalars(select(DeploymentRow).order_by(DeploymentRow.id))]

    def delete_deployment(self, deployment_id: str) -> None:
        with self._tx() as s:
            _need(s.get(DeploymentRow, deployment_id), f"deployment {deployment_id!r}")
            s.execute(delete(DeploymentModuleRow).where(DeploymentModuleRow.deployment_id == deployment_id))
            s.execute(delete(DeploymentRow).where(DeploymentRow.id == deployment_id))

    @staticmethod
    def _deployment(s: Session, row: DeploymentRow) -> DeploymentRecord:
        refs = s.scalars(
            select(DeploymentModuleRow)
            .where(DeploymentModuleRow.deployment_id == row.id)
            .order_by(DeploymentModuleRow.module_name)
        )
        modules = tuple(ModuleRefRecord(r.module_name, r.module_version, dict(r.settings or {})) for r in refs)
        return DeploymentRecord(row.id, row.target_condition, row.priority, row.created, modules)

    # desired documents -------------------------------------------------------
    def issue(
        self,
        device_id: str,
        fingerprint: str,
        deployments: Sequence[str],
        sign: Callable[[int], tuple[str, datetime, datetime]],
        *,
        reissue_before: datetime | None = None,
    ) -> DesiredRecord | None:
        """Allocate the device's next sequence and store the document ``sign(sequence)`` returns.

        One transaction with the device row locked: the fingerprint comparison, the
        counter increment and the insert cannot interleave with another issue for
        the same device, so sequences are strictly increasing and never reused.
        Returns ``None`` (and allocates nothing) when the newest document already
        has ``fingerprint`` and was issued after ``reissue_before``.
        ``sign`` returns ``(envelope JSON, issued, expires)``.
        """
        with self._tx() as s:
            device = s.scalars(select(DeviceRow).where(DeviceRow.id == device_id).with_for_update()).first()
            device = _need(device, f"device {device_id!r}")
            newest = select(DesiredRow).where(DesiredRow.device_id == device_id)
            latest = s.scalars(newest.order_by(DesiredRow.sequence.desc()).limit(1)).first()
            fresh = reissue_before is None or latest is None or latest.issued > reissue_before
            if latest is not None and latest.fingerprint == fingerprint and fresh:
                return None
            sequence = device.last_sequence + 1
            device.last_sequence = sequence
            envelope, issued, expires = sign(sequence)
            row = DesiredRow(
                device_id=device_id, sequence=sequence, envelope=envelope, fingerprint=fingerprint,
                deployments=builtins.list(deployments), issued=issued, expires=expires,
            )
            s.add(row)
            s.flush()
            return _desired(row)

    def latest_desired(self, device_ids: Iterable[str] | None = None) -> dict[str, DesiredRecord]:
        """The newest document of each device (of ``device_ids``, or of all)."""
        newest = select(DesiredRow.device_id, func.max(DesiredRow.sequence).label("seq")).group_by(DesiredRow.device_id)
        if device_ids is not None:
            newest = newest.where(DesiredRow.device_id.in_(builtins.list(device_ids)))
        sub = newest.subquery()
        query = select(DesiredRow).join(
            sub, (DesiredRow.device_id == sub.c.device_id) & (DesiredRow.sequence == sub.c.seq)
        )
        with self._tx() as s:
            return {row.device_id: _desired(row) for row in s.scalars(query)}

    # reported state ----------------------------------------------------------
    def put_reported(self, device_id: str, state: dict[str, Any], received: datetime) -> ReportedRecord:
        with self._tx() as s:
            _need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            row = s.get(ReportedRow, device_id)
            if row is None:
                s.add(ReportedRow(device_id=device_id, state=state, received=received))
            else:
                row.state, row.received = state, received
            return ReportedRecord(device_id, state, received)

    def reported(self, device_ids: Iterable[str] | None = None) -> dict[str, ReportedRecord]:
        query = select(ReportedRow)
        if device_ids is not None:
            query = query.where(ReportedRow.device_id.in_(builtins.list(device_ids)))
        with self._tx() as s:
            return {r.device_id: ReportedRecord(r.device_id, dict(r.state), r.received) for r in s.scalars(query)}

    # operator tokens ---------------------------------------------------------
    def add_token(self, name: str, digest: str, created: datetime) -> None:
        with self._tx() as s:
            if s.get(TokenRow, name) is not None:
                raise AlreadyExistsError(f"A token named {name!r} exists already; pick another name.")
            s.add(TokenRow(name=name, digest=digest, created=created))

    def token_name(self, digest: str) -> str | None:
        """The name of the token whose sha256 is ``digest``, or ``None``."""
        with self._tx() as s:
            return s.scalars(select(TokenRow.name).where(TokenRow.digest == digest)).first()


def _need(row: Any, what: str) -> Any:
    if row is None:
        raise HubNotFoundError(f"No {what} on the hub.")
    return row


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def _engine(url: str, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)
