"""``azureml.core.Workspace``: an edgeship workspace, created on first use with a release key.

Why no Azure details are needed: a v1 script's ``Workspace.from_config()`` /
``Workspace.get(...)`` / ``Workspace(subscription_id, resource_group, name)`` only
says which workspace to use, and here there is one: ``$EDGESHIP_HOME`` (or
``~/.edgeship``). It is created with a release key the first time, so a local
deployment can be signed and verified without running anything else first. The
names in an Azure ``config.json`` (when one is found where Azure looks) are kept for
the script to print; they choose nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeship.signing import Keyring
from edgeship.workspace import Workspace as EdgeshipWorkspace

from ..exceptions import UserErrorException, refuse

__all__ = ["Workspace"]

_CONFIG_NAMES = ("config.json", "project.json")


def _find_config(path: str | os.PathLike[str] | None, file_name: str | None) -> dict[str, Any]:
    """An Azure ``config.json`` where ``from_config`` looks (``path``, its ``.azureml``, then upwards); {} if none."""
    names = (file_name,) if file_name else _CONFIG_NAMES
    start = Path(path or ".").resolve()
    if start.is_file():
        candidates = [start]
    else:
        candidates = []
        for folder in (start, *start.parents):
            for name in names:
                candidates += [folder / name, folder / ".azureml" / name, folder / "aml_config" / name]
    for candidate in candidates:
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except ValueError as exc:
                raise UserErrorException(f"{candidate} is not valid JSON ({exc}); fix or remove it.") from exc
            return data if isinstance(data, dict) else {}
    return {}


class Workspace:
    """The edgeship workspace a v1 script works in."""

    def __init__(self, subscription_id: str | None = None, resource_group: str | None = None,
                 workspace_name: str | None = None, auth: object = None, _location: str | None = None,
                 _disable_service_check: bool = False, _workspace_id: str | None = None,
                 sku: str = "basic", tags: dict[str, str] | None = None, **_ignored: object) -> None:
        del auth, _disable_service_check, _workspace_id, sku  # Azure's sign-in and service details choose nothing here
        self._ws = EdgeshipWorkspace.at()
        if not self._ws.exists():
            self._ws.create()
        keys = Keyring(self._ws)
        if not keys.list("release"):
            keys.create("release")  # a local deployment is signed and verified like any other
        self.subscription_id = subscription_id or "edgeship"
        self.resource_group = resource_group or "edgeship"
        self.name = workspace_name or self._ws.root.name
        self.location = _location or "local"
        self.tags = dict(tags or {})

    @property
    def edgeship(self) -> EdgeshipWorkspace:
        """The edgeship workspace this stands for."""
        return self._ws

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, auth: object = None, _logger: object = None,
                    _file_name: str | None = None) -> Workspace:
        config = _find_config(path, _file_name)
        return cls(config.get("subscription_id"), config.get("resource_group"), config.get("workspace_name"), auth)

    @classmethod
    def get(cls, name: str, auth: object = None, subscription_id: str | None = None,
            resource_group: str | None = None, location: str | None = None, **_ignored: object) -> Workspace:
        return cls(subscription_id, resource_group, name, auth, _location=location)

    @classmethod
    def create(cls, name: str, auth: object = None, subscription_id: str | None = None,
               resource_group: str | None = None, location: str | None = None, exist_ok: bool = True,
               **_ignored: object) -> Workspace:
        return cls(subscription_id, resource_group, name, auth, _location=location)

    def write_config(self, path: str | None = None, file_name: str | None = None) -> None:
        """Write the Azure-style ``config.json`` a later ``from_config`` reads (names only)."""
        folder = Path(path or ".") / ".azureml"
        folder.mkdir(parents=True, exist_ok=True)
        data = {"subscription_id": self.subscription_id, "resource_group": self.resource_group,
                "workspace_name": self.name}
        (folder / (file_name or "config.json")).write_text(json.dumps(data, indent=2) + "\n")

    def get_details(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "resourceGroup": self.resource_group,
                "subscriptionId": self.subscription_id, "edgeshipHome": str(self._ws.root)}

    @property
    def models(self) -> dict[str, Any]:
        """The newest version of each registered model, by name (as Azure's ``ws.models``)."""
        from .model import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    @property
    def webservices(self) -> dict[str, Any]:
        from .webservice import Webservice

        return {s.name: s for s in Webservice.list(self)}

    @property
    def environments(self) -> dict[str, Any]:
        from .environment import Environment

        return Environment.list(self)

    def get_default_datastore(self) -> Any:
        raise refuse("Workspace.get_default_datastore", "keep data in files and pass their paths; "
                     "'edgeship model register' stores model files")

    def delete(self, *args: object, **kwargs: object) -> None:
        raise refuse("Workspace.delete", f"remove the folder {self._ws.root} yourself if you mean it")

    def __repr__(self) -> str:
        return f"Workspace.create(name='{self.name}', edgeship_home='{self._ws.root}')"
