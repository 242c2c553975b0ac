"""The three steps every release is made of: package (and sign), upload, deploy. One implementation.

``edgeship release run|watch`` (:mod:`edgeship.release.pipeline`), the demo's release
side and the Azure ML ``Model.deploy`` layer call these functions; none of them keeps
its own copy. Signing happens inside :func:`package` with the workspace's release keys
(the packager signs the manifest): the release key never leaves the release side, and
the hub only verifies the module and signs deployment documents.

Each step is safe to repeat: packaging the same inputs twice gives the same bundle
digest, an upload of a module the hub has is a no-op there, and :func:`deploy` treats a
deployment of the same name and modules that already exists as done (a lost answer).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edgeship.errors import EdgeshipError, ReleaseError
from edgeship.fsutil import scratch_dir, sweep_scratch
from edgeship.modules.store import ModuleStore, StoredModule
from edgeship.registry import ModelRef
from edgeship.release.hub import HubDeployment, ReleaseHub
from edgeship.workspace import Workspace

__all__ = ["FAULT_ENV", "PackageOptions", "deploy", "fault_point", "package", "packaged_since", "ship", "upload"]

FAULT_ENV = "EDGESHIP_FAULT"  # test-only: SIGKILL this process at the named point (as edgeship.hub.faults)


def fault_point(name: str) -> None:
    """SIGKILL this process when ``EDGESHIP_FAULT`` names this point, so a test can crash between two steps."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class PackageOptions:
    """How a model version becomes a module: the options of ``edgeship package`` a release passes on."""

    inference_config: Path | None = None
    deployment_config: Path | None = None
    target: str | None = None
    module_name: str | None = None  # default: the first model's name
    image: bool | None = None  # None: build an image when a Docker engine answers
    base_image: str | None = None
    signing_keys: Sequence[str] = ()  # release key names; empty: every release key of the workspace


def package(workspace: Workspace, models: Sequence[ModelRef], options: PackageOptions,
            console: Console | None = None) -> tuple[StoredModule, tuple[str, ...]]:
    """Package and sign ``models`` into the workspace's module store: the stored module and the packager's warnings.

    The output folder is scratch, removed after; scratch of a killed earlier run
    (``releases/.build``) is swept first.
    """
    from edgeship.packager.package import DEFAULT_BASE_IMAGE, PackageRequest, package_module

    parent = workspace.root / "releases" / ".build"
    parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(parent)
    build = scratch_dir(parent / "module")
    try:
        result = package_module(
            workspace,
            PackageRequest(
                models=list(models), output=build / "module", inference_config=options.inference_config,
                deployment_config=options.deployment_config, target=options.target,
                base_image=options.base_image or DEFAULT_BASE_IMAGE, image=options.image,
                name=options.module_name, signing_keys=tuple(options.signing_keys),
            ),
            console=console or Console(quiet=True),
        )
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return result.stored, result.warnings


def packaged_since(workspace: Workspace, module_name: str, pins: Sequence[tuple[str, int, str]],
                   since: float) -> StoredModule | None:
    """A module stored at or after ``since`` that pins exactly ``pins`` (model name, version, digest), if any.

    A release killed after packaging but before it recorded the module finds it here
    instead of packaging the version a second time.
    """
    for stored in reversed(ModuleStore(workspace).list(module_name)):
        if stored.created_at < since:
            continue
        models = [(m.name, m.version, m.digest) for m in stored.manifest().models]
        if models == list(pins):
            return stored
    return None


def upload(hub: ReleaseHub, workspace: Workspace, module: StoredModule) -> None:
    """Hand the signed module to the hub, which verifies it against its release keys before storing it."""
    hub.upload_module(workspace, module.name, module.version)


def deploy(hub: ReleaseHub, name: str, target_condition: str, modules: Sequence[tuple[str, int]], priority: int,
           rollout: Mapping[str, object] | None) -> HubDeployment:
    """Create deployment ``name``; one that exists with the same modules counts as created (a lost answer)."""
    wanted = tuple(modules)
    existing = hub.deployment(name)
    if existing is None:
        try:
            return hub.create_deployment(name, target_condition, list(wanted), priority, rollout)
        except EdgeshipError:
            existing = hub.deployment(name)  # the hub may have created it before the answer was lost
            if existing is None or existing.modules != wanted:
                raise
    if existing.modules != wanted:
        shown = ", ".join(f"{n}:{v}" for n, v in existing.modules)
        raise ReleaseError(
            f"Deployment {name} exists on the hub with {shown}, not {', '.join(f'{n}:{v}' for n, v in wanted)}; "
            f"delete it ('edgeship deployment delete {name}') or release under another --deployment name."
        )
    return existing


def ship(workspace: Workspace, hub: ReleaseHub, models: Sequence[ModelRef], options: PackageOptions, *,
         deployment: str, target_condition: str, priority: int = 0, rollout: Mapping[str, object] | None = None,
         console: Console | None = None) -> tuple[StoredModule, HubDeployment]:
    """Package, sign, upload and deploy in one call: the seam for Azure ML's ``Model.deploy`` (issue 19).

    No naming, state file or version choice: those are the continuous release's
    (:class:`edgeship.release.pipeline.Releaser`), built on the same three steps.
    """
    module, _warnings = package(workspace, models, options, console)
    upload(hub, workspace, module)
    return module, deploy(hub, deployment, target_condition, [(module.name, module.version)], priority, rollout)
