"""``Deployments``: the layers that say which devices run which module versions, and their status.

Creating or deleting a deployment commits a re-evaluation intent for every device with
the change, then drains it through :class:`~edgeship.hub.services.issuing.Issuing`, so
devices join and leave before the call returns. Status follows IoT Edge's metrics and is
computed by the pure ``edgeship.hub.status`` over columns read by ``status_columns.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from edgeship.deployment import ModuleSettings
from edgeship.errors import InputError
from edgeship.hub.faults import AFTER_CHANGE_COMMIT, fault_point
from edgeship.hub.rollouts import RolloutPolicy
from edgeship.hub.services.issuing import Issuing
from edgeship.hub.services.rollouts import Rollouts
from edgeship.hub.services.rules import parsed_condition, validate_deployment_id, validate_module_name
from edgeship.hub.services.status_columns import StatusColumns
from edgeship.hub.status import DeploymentStatus, deployment_status
from edgeship.hub.store import DeploymentRecord, HubStore, ModuleRefRecord

__all__ = ["Deployments", "ModuleRefSpec"]


@dataclass(frozen=True)
class ModuleRefSpec:
    """A module a deployment ships, and the per-device settings (port, restartPolicy, env)."""

    name: str
    version: int
    settings: Mapping[str, Any] = field(default_factory=dict)


class Deployments:
    """Deployments by name; every change is delivered (documents signed and published) before it returns."""

    def __init__(
        self, store: HubStore, issuing: Issuing, rollouts: Rollouts, *, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.issuing = issuing
        self.rollouts = rollouts
        self.clock = clock
        self.columns = StatusColumns(store)

    def create_deployment(
        self, deployment_id: str, target_condition: str, modules: Iterable[ModuleRefSpec], priority: int = 0, *,
        rollout: RolloutPolicy | None = None, actor: str = "hub",
    ) -> DeploymentRecord:
        """Create a deployment and deliver it; with a staged ``rollout`` (waves), only its first wave is issued.

        ``actor`` (the operator token's name) is recorded in the rollout's first event.
        """
        validate_deployment_id(deployment_id)
        if "\x00" in target_condition:  # the parser takes any character in a quoted value; a database may not
            raise InputError("The target condition holds a NUL character; remove it.")
        parsed_condition(target_condition)  # TargetConditionError (an InputError) names the column
        refs: list[ModuleRefRecord] = []
        for spec in modules:
            validate_module_name(spec.name)
            try:
                settings = ModuleSettings.model_validate(dict(spec.settings))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise InputError(f"Settings of module {spec.name}:{spec.version}: {where}: {first['msg']}.") from exc
            if any(r.name == spec.name for r in refs):
                raise InputError(f"Deployment {deployment_id!r} names module {spec.name!r} twice; keep one version.")
            refs.append(ModuleRefRecord(spec.name, spec.version, settings.model_dump(by_alias=True, exclude_none=True)))
        if not refs:
            raise InputError(f"Deployment {deployment_id!r} has no modules; add at least one (NAME:VERSION).")
        start = (self.rollouts.plan_start(deployment_id, target_condition, refs, rollout, actor)
                 if rollout is not None and rollout.staged else None)
        record = self.store.add_deployment(  # with its re-evaluation intent and rollout, in one transaction
            DeploymentRecord(deployment_id, target_condition, int(priority), self.clock(), tuple(refs)), start
        )
        fault_point(AFTER_CHANGE_COMMIT)
        self.issuing.drain_pending()
        if start is not None:
            self.rollouts.tell_replicas()
        return record

    def list_deployments(self) -> list[DeploymentRecord]:
        return self.store.list_deployments()

    def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        return self.store.get_deployment(validate_deployment_id(deployment_id))

    def delete_deployment(self, deployment_id: str) -> None:
        self.store.delete_deployment(validate_deployment_id(deployment_id))  # with its re-evaluation intent
        fault_point(AFTER_CHANGE_COMMIT)
        self.issuing.drain_pending()

    def deployment_status(self, deployment_id: str) -> DeploymentStatus:
        """IoT Edge's counts and each targeted device's state, read as columns (``status_columns.py``)."""
        return self.statuses([self.store.get_deployment(validate_deployment_id(deployment_id))])[0]

    def statuses(self, records: Iterable[DeploymentRecord]) -> list[DeploymentStatus]:
        """The status of each deployment in ``records``, from one read of the fleet (the dashboard's list)."""
        records = list(records)
        if not records:
            return []
        devices, newest, reports = self.columns.devices(), self.columns.newest(), self.columns.reports()
        return [deployment_status(record.id, parsed_condition(record.target_condition), devices, newest, reports,
                                  held=self.rollouts.held(record.id)) for record in records]
