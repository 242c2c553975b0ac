"""Modules and deployments: what the hub can ship, and the layers that say who gets it.

Creating or deleting a deployment commits a re-evaluation intent for every device in
the same transaction (``outbox.py``, ADR 0019). A deployment's module rows reference
stored modules by foreign key, so a module cannot be removed while a deployment names it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from edgeship.hub.errors import AlreadyExistsError
from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import DeploymentModuleRow, DeploymentRow, ModuleRow
from edgeship.hub.store.outbox import record_intent
from edgeship.hub.store.parts import ModulePartRow
from edgeship.hub.store.records import DeploymentRecord, ModuleRecord, ModuleRefRecord, module_record
from edgeship.hub.store.rollouts import RolloutStart, insert_rollout

__all__ = ["CatalogTables"]


class CatalogTables(StoreBase):
    """``modules``, ``deployments`` and ``deployment_modules``."""

    def add_module(self, record: ModuleRecord, parts: Iterable[str] = ()) -> tuple[ModuleRecord, bool]:
        """Store a module and the digests of its parts; ``(existing, False)`` when the identical module is there."""
        with self._tx() as s:
            row = s.get(ModuleRow, (record.name, record.version))
            if row is not None:
                if row.manifest_digest != record.manifest_digest:
                    raise AlreadyExistsError(
                        f"Module {record.ref} exists on the hub with a different manifest; "
                        "package a new version instead of replacing one."
                    )
                return module_record(row), False
            s.add(ModuleRow(**record.__dict__))
            s.flush()  # the parts' foreign key needs the module row first
            s.add_all(ModulePartRow(name=record.name, version=record.version, digest=d) for d in sorted(set(parts)))
            return record, True

    def get_module(self, name: str, version: int) -> ModuleRecord:
        with self._tx() as s:
            return module_record(need(s.get(ModuleRow, (name, version)), f"module {name}:{version}"))

    def list_modules(self, name: str | None = None) -> builtins.list[ModuleRecord]:
        query = select(ModuleRow).order_by(ModuleRow.name, ModuleRow.version)
        if name is not None:
            query = query.where(ModuleRow.name == name)
        with self._tx() as s:
            return [module_record(row) for row in s.scalars(query)]

    def has_blob(self, digest: str) -> bool:
        """True when a stored module names ``digest`` (``sha256:<hex>``) as its bundle, image or a part."""
        query = select(func.count()).select_from(ModuleRow).where(
            (ModuleRow.bundle_digest == digest) | (ModuleRow.image_digest == digest)
        )
        part = select(ModulePartRow.digest).where(ModulePartRow.digest == digest).limit(1)
        with self._tx() as s:
            return bool(s.scalar(query)) or s.scalar(part) is not None

    # deployments -------------------------------------------------------------
    def add_deployment(self, record: DeploymentRecord, rollout: RolloutStart | None = None) -> DeploymentRecord:
        """Add a deployment with its re-evaluation intent, and its rollout when staged, in one transaction."""
        with self._tx() as s:
            if s.get(DeploymentRow, record.id) is not None:
                raise AlreadyExistsError(f"Deployment {record.id!r} exists already; delete it or pick another name.")
            for ref in record.modules:
                need(s.get(ModuleRow, (ref.name, ref.version)), f"module {ref.name}:{ref.version}")
            s.add(DeploymentRow(
                id=record.id, target_condition=record.target_condition, priority=record.priority,
                created=record.created,
            ))
            s.flush()
            for ref in record.modules:
                s.add(DeploymentModuleRow(
                    deployment_id=record.id, module_name=ref.name, module_version=ref.version, settings=ref.settings,
                ))
            if rollout is not None:
                insert_rollout(s, record.id, rollout, when=record.created)
            first_wave = None if rollout is None else [d for d, wave in rollout.members.items() if wave == 0]
            record_intent(s, f"deployment {record.id} created", first_wave, when=record.created)  # staged: wave 1
            return record

    def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        with self._tx() as s:
            row = need(s.get(DeploymentRow, deployment_id), f"deployment {deployment_id!r}")
            return self._deployment(s, row)

    def list_deployments(self) -> builtins.list[DeploymentRecord]:
        with self._tx() as s:
            return [self._deployment(s, row) for row in s.scalars(select(DeploymentRow).order_by(DeploymentRow.id))]

    def delete_deployment(self, deployment_id: str) -> None:
        with self._tx() as s:
            need(s.get(DeploymentRow, deployment_id), f"deployment {deployment_id!r}")
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
