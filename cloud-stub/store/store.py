"""``HubStore``: the hub's persistent state behind plain records, on SQLite or PostgreSQL.

The service layer never sees an ORM object: every method opens its own short
transaction and returns frozen records, so a caller cannot touch the database
outside a transaction by accident.

Every change that can alter what a device must run (a device added or re-tagged, a
deployment added or deleted) records a re-evaluation intent in the same transaction
(``outbox.py``, ADR 0019): the change and the promise to deliver it commit together.

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

from sqlalchemy import (
    ColumnElement,
    Engine,
    Subquery,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgeship.deployment import MAX_SEQUENCE
from edgeship.errors import EdgeshipError
from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError, SequenceExhaustedError
from edgeship.hub.store import schema
from edgeship.hub.store.models import (
    Base,
    DeploymentModuleRow,
    DeploymentRow,
    DesiredRow,
    DeviceRow,
    ModuleRow,
    ReportedRow,
)
from edgeship.hub.store.outbox import record_intent

__all__ = [
    "DeploymentRecord",
    "DesiredRecord",
    "DeviceRecord",
    "HubStore",
    "HubStoreError",
    "IssueRequest",
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


@dataclass(frozen=True)
class IssueRequest:
    """One device's part of :meth:`HubStore.issue_many`: what its document asks for, and how to sign it.

    ``sign(sequence)`` returns ``(envelope JSON, issued, expires)``; it is called only
    when the document is issued, inside the transaction that allocates ``sequence``.
    """

    device_id: str
    fingerprint: str
    deployments: Sequence[str]
    sign: Callable[[int], tuple[str, datetime, datetime]]


def _device(row: DeviceRow) -> DeviceRecord:
    return DeviceRecord(row.id, dict(row.tags or {}), row.created, row.last_sequence)


def _module(row: ModuleRow) -> ModuleRecord:
    return ModuleRecord(
        row.name, row.version, dict(row.envelope), row.manifest_digest, row.bundle_digest, row.image_digest,
        row.variant, row.created,
    )


class HubStore:
    """The hub's tables over one engine URL (``sqlite:///...`` or ``postgresql+psycopg://...``).

    Opening it upgrades the database to the newest schema first (:func:`schema.upgrade`);
    ``upgraded_from`` is the revision it found (``"none"``: empty or made before migrations).
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            self.engine: Engine = _engine(url, echo)
        except SQLAlchemyError as exc:
            raise HubStoreError(f"Cannot open the hub database {_safe(url)}: {exc}") from exc
        try:
            self.upgraded_from = schema.upgrade(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise HubStoreError(f"Cannot open or upgrade the hub database {_safe(url)}: {exc}") from exc
        except BaseException:
            self.engine.dispose()
            raise
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
            record_intent(s, "device created", [device_id], when=created)
            return _device(row)

    def add_devices(self, devices: Sequence[tuple[str, dict[str, Any]]], created: datetime) -> None:
        """Add many devices in one transaction (one INSERT); any id that exists already fails them all."""
        ids = [device_id for device_id, _tags in devices]
        if len(set(ids)) != len(ids):
            raise AlreadyExistsError("The devices to add name one id twice; give each device once.")
        with self._tx() as s:
            taken = s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(ids)).limit(1)).first()
            if taken is not None:
                raise AlreadyExistsError(f"Device {taken!r} exists already; update its tags instead.")
            if devices:
                s.execute(insert(Base.metadata.tables["devices"]), [
                    {"id": device_id, "tags": tags, "created": created, "last_sequence": 0}
                    for device_id, tags in devices
                ])
                record_intent(s, "devices created", ids, when=created)

    def set_tags(self, device_id: str, tags: dict[str, Any]) -> DeviceRecord:
        with self._tx() as s:
            row = _need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            row.tags = tags
            s.flush()
            record_intent(s, "tags changed", [device_id])
            return _device(row)

    def get_device(self, device_id: str) -> DeviceRecord:
        with self._tx() as s:
            return _device(_need(s.get(DeviceRow, device_id), f"device {device_id!r}"))

    def list_devices(self, ids: Iterable[str] | None = None) -> builtins.list[DeviceRecord]:
        # Columns, not ORM entities: re-evaluation reads every device, and identity-map bookkeeping
        # was a third of its cost at 10,000 devices.
        query = select(DeviceRow.id, DeviceRow.tags, DeviceRow.created, DeviceRow.last_sequence).order_by(DeviceRow.id)
        if ids is not None:
            query = query.where(DeviceRow.id.in_(builtins.list(ids)))
        with self._tx() as s:
            return [DeviceRecord(r.id, dict(r.tags or {}), r.created, r.last_sequence) for r in s.execute(query)]

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
            record_intent(s, f"deployment {record.id} created", None, when=record.created)
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
            record_intent(s, f"deployment {deployment_id} deleted", None)

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

        :meth:`issue_many` for one device: ``None`` (and nothing allocated) when the
        newest document already has ``fingerprint`` and was issued after ``reissue_before``.
        """
        issued = self.issue_many([IssueRequest(device_id, fingerprint, deployments, sign)],
                                 reissue_before=reissue_before)
        return issued[0] if issued else None

    def issue_many(
        self, requests: Sequence[IssueRequest], *, reissue_before: datetime | None = None
    ) -> builtins.list[DesiredRecord]:
        """Issue documents for many devices in one transaction; returns those issued, in request order.

        The device rows are locked first (in id order, so two batches cannot deadlock):
        each fingerprint comparison, counter increment and insert cannot interleave
        with another issue for the same device, so sequences are strictly increasing
        and never reused. A device whose newest document already has the request's
        fingerprint and was issued after ``reissue_before`` is skipped. The counters
        are updated and the documents inserted with one statement each.
        """
        ids = [r.device_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("issue_many needs each device at most once per call")
        if not requests:
            return []
        with self._tx() as s:
            locked = select(DeviceRow.id, DeviceRow.last_sequence).where(DeviceRow.id.in_(ids))
            counters = {row.id: row.last_sequence for row in s.execute(locked.order_by(DeviceRow.id).with_for_update())}
            for device_id in ids:
                if device_id not in counters:
                    raise HubNotFoundError(f"No device {device_id!r} on the hub.")
            latest = _latest_fingerprints(s, ids)
            issued: builtins.list[DesiredRecord] = []
            for request in requests:
                prior = latest.get(request.device_id)
                fresh = reissue_before is None or prior is None or prior[1] > reissue_before
                if prior is not None and prior[0] == request.fingerprint and fresh:
                    continue
                sequence = counters[request.device_id] + 1
                if sequence > MAX_SEQUENCE:
                    raise SequenceExhaustedError(
                        f"Device {request.device_id!r} has used every document sequence up to {MAX_SEQUENCE}; "
                        "delete and re-create the device and clear its agent's state folder to start the count again."
                    )
                envelope, when, expires = request.sign(sequence)
                issued.append(DesiredRecord(
                    request.device_id, sequence, envelope, request.fingerprint, tuple(request.deployments), when,
                    expires,
                ))
            if issued:
                devices, desired = Base.metadata.tables["devices"], Base.metadata.tables["desired"]
                s.execute(
                    update(devices).where(devices.c.id == bindparam("b_id")).values(last_sequence=bindparam("b_seq")),
                    [{"b_id": d.device_id, "b_seq": d.sequence} for d in issued],
                )
                s.execute(insert(desired), [
                    {"device_id": d.device_id, "sequence": d.sequence, "envelope": d.envelope,
                     "fingerprint": d.fingerprint, "deployments": builtins.list(d.deployments), "issued": d.issued,
                     "expires": d.expires}
                    for d in issued
                ])
            return issued

    def latest_desired(self, device_ids: Iterable[str] | None = None) -> dict[str, DesiredRecord]:
        """The newest document of each device (of ``device_ids``, or of all), in one query."""
        ids = None if device_ids is None else builtins.list(device_ids)
        d = DesiredRow
        query = select(d.device_id, d.sequence, d.envelope, d.fingerprint, d.deployments, d.issued, d.expires)
        with self._tx() as s:
            return {
                r.device_id: DesiredRecord(r.device_id, r.sequence, r.envelope, r.fingerprint,
                                           tuple(r.deployments or ()), r.issued, r.expires)
                for r in s.execute(query.join(*_newest(ids)))
            }

    def latest_fingerprints(self, device_ids: Iterable[str] | None = None) -> dict[str, tuple[str, datetime]]:
        """``(fingerprint, issued)`` of each device's newest document: what re-evaluation compares, without
        reading the envelopes."""
        with self._tx() as s:
            return _latest_fingerprints(s, None if device_ids is None else builtins.list(device_ids))

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

    def put_reported_many(
        self, items: Iterable[tuple[str, dict[str, Any], datetime]]
    ) -> tuple[builtins.list[ReportedRecord], builtins.list[str]]:
        """Store many reports in one transaction: ``(stored, ids of unknown devices)``.

        A device reported twice in ``items`` keeps its last report (as a retained topic
        would). Unknown devices are left out rather than failing the batch, so one
        stray topic cannot drop everyone else's reports.
        """
        newest: dict[str, ReportedRecord] = {}
        for device_id, state, received in items:
            newest.pop(device_id, None)
            newest[device_id] = ReportedRecord(device_id, state, received)
        if not newest:
            return [], []
        ids = builtins.list(newest)
        with self._tx() as s:
            known = set(s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(ids))))
            present = set(s.scalars(select(ReportedRow.device_id).where(ReportedRow.device_id.in_(ids))))
            stored = [r for r in newest.values() if r.device_id in known]
            table = Base.metadata.tables["reported"]
            updates = [{"b_id": r.device_id, "b_state": r.state, "b_received": r.received}
                       for r in stored if r.device_id in present]
            inserts = [{"device_id": r.device_id, "state": r.state, "received": r.received}
                       for r in stored if r.device_id not in present]
            if updates:
                s.execute(
                    update(table).where(table.c.device_id == bindparam("b_id"))
                    .values(state=bindparam("b_state"), received=bindparam("b_received")),
                    updates,
                )
            if inserts:
                s.execute(insert(table), inserts)
            return stored, [i for i in ids if i not in known]

    def reported(self, device_ids: Iterable[str] | None = None) -> dict[str, ReportedRecord]:
        query = select(ReportedRow)
        if device_ids is not None:
            query = query.where(ReportedRow.device_id.in_(builtins.list(device_ids)))
        with self._tx() as s:
            return {r.device_id: ReportedRecord(r.device_id, dict(r.state), r.received) for r in s.scalars(query)}

def _newest(ids: Sequence[str] | None) -> tuple[Subquery, ColumnElement[bool]]:
    """A join that limits a query over ``DesiredRow`` columns to each device's newest document."""
    newest = select(DesiredRow.device_id, func.max(DesiredRow.sequence).label("seq")).group_by(DesiredRow.device_id)
    if ids is not None:
        newest = newest.where(DesiredRow.device_id.in_(ids))
    sub = newest.subquery()
    return sub, (DesiredRow.device_id == sub.c.device_id) & (DesiredRow.sequence == sub.c.seq)


def _latest_fingerprints(s: Session, ids: Sequence[str] | None) -> dict[str, tuple[str, datetime]]:
    query = select(DesiredRow.device_id, DesiredRow.fingerprint, DesiredRow.issued)
    return {r.device_id: (r.fingerprint, r.issued) for r in s.execute(query.join(*_newest(ids)))}


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
