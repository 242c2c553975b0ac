"""What a release needs from the hub, behind one small protocol, and its two implementations.

:class:`RestHub` talks to a hub over its REST API (``edgeship.hub.client``: the CLI,
CI jobs); :class:`ServicesHub` calls a hub's services in the same process (the demo,
which runs its own hub). The pipeline sees only :class:`ReleaseHub`, so it is one
implementation whichever way the hub is reached (the ``MockTransport`` idea of
httpx: a second real implementation, not a patch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edgeship.release.plan import ReleaseInfo, release_version

if TYPE_CHECKING:
    from edgeship.hub.client import HubClient
    from edgeship.hub.services import HubServices
    from edgeship.workspace import Workspace

__all__ = ["HubDeployment", "ReleaseHub", "RestHub", "ServicesHub", "as_release"]


@dataclass(frozen=True)
class HubDeployment:
    """A deployment as the hub shows it; ``rollout`` is its rollout state, None when it has none.

    ``detail``: what log lines say about it when known (``targeted`` devices, the rollout's
    ``wave``, number of ``waves`` and ``reason``).
    """

    name: str
    target_condition: str
    priority: int
    modules: tuple[tuple[str, int], ...]
    rollout: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rest(cls, data: Mapping[str, Any]) -> HubDeployment:
        rollout = data.get("rollout") or None
        counts = (data.get("status") or {}).get("counts") or {}
        detail: dict[str, Any] = {"targeted": counts.get("targeted")}
        if rollout:
            detail.update(wave=rollout.get("wave"), waves=len(rollout.get("waves") or ()),
                          reason=rollout.get("reason") or "")
        return cls(str(data["name"]), str(data["targetCondition"]), int(data["priority"]),
                   tuple((str(m["name"]), int(m["version"])) for m in data.get("modules") or ()),
                   str(rollout["state"]) if rollout else None, detail)


def as_release(deployment: str, found: HubDeployment) -> ReleaseInfo | None:
    """The release ``found`` is of ``deployment`` (``NAME-vN``), or None when it is another deployment."""
    version = release_version(deployment, found.name)
    if version is None:
        return None
    return ReleaseInfo(found.name, version, found.priority, found.target_condition, found.modules, found.rollout)


class ReleaseHub(Protocol):
    """The hub operations of a release. Each raises an :class:`~edgeship.errors.EdgeshipError` on failure."""

    where: str  # the hub, for log lines ("http://127.0.0.1:8800")

    def upload_module(self, workspace: Workspace, name: str, version: int) -> None:
        """Give the hub a signed module it verifies; uploading the same module again changes nothing."""

    def deployments(self) -> list[HubDeployment]:
        """Every deployment (``rollout`` may be None here even when it has one; see :meth:`deployment`)."""

    def deployment(self, name: str) -> HubDeployment | None:
        """One deployment with its rollout state, or None when there is none of that name."""

    def create_deployment(self, name: str, target_condition: str, modules: list[tuple[str, int]], priority: int,
                          rollout: Mapping[str, Any] | None) -> HubDeployment:
        """Create it (a staged ``rollout`` starts with its first wave); raises when the name exists."""

    def delete_deployment(self, name: str) -> None: ...


class RestHub:
    """:class:`ReleaseHub` over the REST API. The module travels over HTTP (``PUT /uploads/{digest}`` for each
    artifact the hub lacks, then ``POST /modules/signed``), so the release side needs no folder shared with the hub."""

    def __init__(self, client: HubClient) -> None:
        self.client = client
        self.where = client.url

    def upload_module(self, workspace: Workspace, name: str, version: int) -> None:
        from edgeship.modules.store import ModuleStore

        self.client.upload_module_dir(ModuleStore(workspace).get(name, version).directory)

    def deployments(self) -> list[HubDeployment]:
        return [HubDeployment.from_rest(d) for d in self.client.list_deployments()]

    def deployment(self, name: str) -> HubDeployment | None:
        from edgeship.hub.client import HubRequestError

        try:
            return HubDeployment.from_rest(self.client.get_deployment(name))
        except HubRequestError as exc:
            if exc.status == 404:
                return None
            raise

    def create_deployment(self, name: str, target_condition: str, modules: list[tuple[str, int]], priority: int,
                          rollout: Mapping[str, Any] | None) -> HubDeployment:
        body = [{"name": n, "version": v} for n, v in modules]
        return HubDeployment.from_rest(self.client.create_deployment(name, target_condition, body, priority, rollout))

    def delete_deployment(self, name: str) -> None:
        self.client.delete_deployment(name)


class ServicesHub:
    """:class:`ReleaseHub` over a hub's services in this process (the demo runs its own hub)."""

    def __init__(self, services: HubServices, where: str = "the hub") -> None:
        self.services = services
        self.where = where

    def upload_module(self, workspace: Workspace, name: str, version: int) -> None:
        self.services.catalog.upload_from_workspace(workspace.root, name, version)

    def deployments(self) -> list[HubDeployment]:
        return [self._of(record) for record in self.services.deployments.list_deployments()]

    def deployment(self, name: str) -> HubDeployment | None:
        from edgeship.hub.errors import HubNotFoundError

        try:
            return self._of(self.services.deployments.get_deployment(name))
        except HubNotFoundError:
            return None

    def create_deployment(self, name: str, target_condition: str, modules: list[tuple[str, int]], priority: int,
                          rollout: Mapping[str, Any] | None) -> HubDeployment:
        from edgeship.hub.rollouts.policy import RolloutPolicy
        from edgeship.hub.services import ModuleRefSpec

        policy = RolloutPolicy.from_dict(dict(rollout)) if rollout is not None else None
        specs = [ModuleRefSpec(n, v) for n, v in modules]
        record = self.services.deployments.create_deployment(name, target_condition, specs, priority,
                                                             rollout=policy, actor="release")
        return self._of(record)

    def delete_deployment(self, name: str) -> None:
        self.services.deployments.delete_deployment(name)

    def _of(self, record: Any) -> HubDeployment:
        from edgeship.hub.errors import HubNotFoundError

        try:
            view = self.services.rollouts.show(record.id)
            state: str | None = view.state
            detail: dict[str, Any] = {"wave": view.wave, "waves": len(view.waves), "reason": view.reason}
        except HubNotFoundError:
            state, detail = None, {}
        return HubDeployment(record.id, record.target_condition, record.priority,
                             tuple((m.name, m.version) for m in record.modules), state, detail)
