"""The release state file: which step each model version reached, so a killed release resumes where it stopped.

On disk, in the release-side workspace::

    releases/<deployment>.json    {"schemaVersion": 1, "deployment", "model", "versions": {"N": entry}}
    releases/<deployment>.lock    held (flock) by the one 'edgeship release' working on <deployment>
    releases/.build/              packaging scratch, pid-named (swept at start)

An entry's ``step`` is the last step that finished for the version: ``packaging``
(started; ``started`` is when), ``packaged`` (``module`` is NAME:VERSION in the module
store), ``uploaded`` (the hub has the module), ``deployed`` (``release`` names the hub
deployment). Every change is one atomic write (temp file, fsync, rename), so a kill at
any moment leaves the previous or the next state, never half of one. The file is a
cache of progress, not the authority: the hub's ``NAME-vN`` deployments say what was
released, and are checked before any step (docs/release.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from edgeship.errors import ReleaseError
from edgeship.fsutil import atomic_write_text
from edgeship.workspace import Workspace

__all__ = ["STEPS", "ReleaseState", "Step", "VersionEntry", "release_lock", "releases_dir"]

Step = Literal["packaging", "packaged", "uploaded", "deployed"]
STEPS: tuple[Step, ...] = ("packaging", "packaged", "uploaded", "deployed")
SCHEMA_VERSION = 1


def releases_dir(workspace: Workspace) -> Path:
    return workspace.root / "releases"


@dataclass(frozen=True)
class VersionEntry:
    step: Step
    started: float  # time.time() when packaging started: a module stored after it may be this version's
    module: str | None = None  # NAME:VERSION in the workspace's module store
    release: str | None = None  # the hub deployment, NAME-vN
    priority: int | None = None
    updated: float = 0.0

    def at(self, step: Step, **changes: Any) -> VersionEntry:
        return replace(self, step=step, updated=time.time(), **changes)

    def reached(self, step: Step) -> bool:
        return STEPS.index(self.step) >= STEPS.index(step)


class ReleaseState:
    """The progress of one deployment's releases; ``save`` after every step."""

    def __init__(self, path: Path, deployment: str, model: str, versions: dict[int, VersionEntry]) -> None:
        self.path = path
        self.deployment = deployment
        self.model = model
        self.versions = versions

    @classmethod
    def load(cls, workspace: Workspace, deployment: str, model: str) -> ReleaseState:
        path = releases_dir(workspace) / f"{deployment}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, deployment, model, {})
        except (OSError, ValueError) as exc:
            raise ReleaseError(
                f"The release state file {path} is unreadable ({exc}); move it away and run again "
                "(the hub's deployments still tell which versions were released)."
            ) from exc
        if not isinstance(data, dict) or data.get("schemaVersion") != SCHEMA_VERSION:
            raise ReleaseError(f"The release state file {path} is not a schema {SCHEMA_VERSION} state; move it away "
                               "and run again.")
        if data.get("model") != model:
            raise ReleaseError(
                f"Deployment {deployment} releases model {data.get('model')!r} (state file {path}), not {model!r}; "
                "pick another --deployment name."
            )
        try:
            versions = {int(k): VersionEntry(**v) for k, v in (data.get("versions") or {}).items()}
        except (TypeError, ValueError) as exc:
            raise ReleaseError(f"The release state file {path} has a damaged entry ({exc}); move it away and "
                               "run again.") from exc
        return cls(path, deployment, model, versions)

    def get(self, version: int) -> VersionEntry | None:
        return self.versions.get(version)

    def deployed(self) -> set[int]:
        return {v for v, e in self.versions.items() if e.step == "deployed"}

    def put(self, version: int, entry: VersionEntry) -> None:
        """Record ``entry`` for ``version`` and write the whole file atomically."""
        self.versions[version] = entry
        data = {
            "schemaVersion": SCHEMA_VERSION,
            "deployment": self.deployment,
            "model": self.model,
            "versions": {str(v): asdict(e) for v, e in sorted(self.versions.items())},
        }
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def release_lock(workspace: Workspace, deployment: str) -> Iterator[None]:
    """Hold ``releases/<deployment>.lock`` for the block; a second release of the same deployment is refused.

    The kernel drops an flock when its holder dies (SIGKILL included): no stale lock.
    """
    folder = releases_dir(workspace)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{deployment}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ReleaseError(
                f"Another 'edgeship release' (pid {holder}) is releasing deployment {deployment} from this "
                "workspace; stop it first, or wait for it to finish."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock
