"""Releases of registered models to the fleet: package (sign), upload, deploy; once, or on every new version.

``steps`` holds the three steps every caller shares (``ship`` is the one-call seam for
Azure ML's ``Model.deploy``), ``plan`` the pure decisions (which version, the
``NAME-vN`` naming, priorities, pruning), ``state`` the resumable progress file,
``hub`` the hub behind one protocol (REST or in-process) and ``pipeline`` the
``release run`` pass and the ``release watch`` loop (docs/release.md, ADR 0025).
"""

from __future__ import annotations

from edgeship.release.hub import HubDeployment, ReleaseHub, RestHub, ServicesHub
from edgeship.release.pipeline import PassResult, Releaser, ReleaseSpec
from edgeship.release.plan import ReleaseInfo, release_name
from edgeship.release.state import ReleaseState, release_lock
from edgeship.release.steps import PackageOptions, deploy, package, ship, upload

__all__ = [
    "HubDeployment",
    "PackageOptions",
    "PassResult",
    "ReleaseHub",
    "ReleaseInfo",
    "ReleaseSpec",
    "ReleaseState",
    "Releaser",
    "RestHub",
    "ServicesHub",
    "deploy",
    "package",
    "release_lock",
    "release_name",
    "ship",
    "upload",
]
