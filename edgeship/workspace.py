"""Where a workspace lives on disk and what it holds.

A workspace is a directory (``EDGESHIP_HOME``, default ``~/.edgeship``) with
``registry.db`` (SQLite), the content-addressed blob store ``blobs/sha256/<hex>``,
``keys/``, ``modules/`` and ``cache/``. Everything else finds its paths here, so a
reader learns the on-disk layout from this one file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeship.errors import WorkspaceError

__all__ = ["ENV_HOME", "Workspace", "default_home"]

ENV_HOME = "EDGESHIP_HOME"
_MARKER = "registry.db"


def default_home() -> Path:
    """``$EDGESHIP_HOME`` when set, else ``~/.edgeship``."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".edgeship"


@dataclass(frozen=True)
class Workspace:
    """An edgeship workspace rooted at ``root``. Cheap to construct; touches no disk."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        return cls(Path(root).expanduser().resolve() if root else default_home().resolve())

    @property
    def db_path(self) -> Path:
        return self.root / _MARKER

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def modules_dir(self) -> Path:
        return self.root / "modules"

    @property
    def cache_dir(self) -> Path:
        """Materialized model copies and other rebuildable data."""
        return self.root / "cache"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same filesystem as the blobs, so renames are atomic."""
        return self.root / "tmp"

    def exists(self) -> bool:
        return self.db_path.is_file()

    def create(self) -> bool:
        """Create the folders and the registry database. Returns False if it already existed."""
        existed = self.exists()
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"{self.root} exists and is not a directory; choose another --workspace.")
        for folder in (self.root, self.blobs_dir, self.keys_dir, self.modules_dir, self.cache_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.keys_dir.chmod(0o700)
        # Imported here: the registry schema belongs to the registry, not to the layout.
        from edgeship.registry.store import ensure_schema

        ensure_schema(self.db_path)
        return not existed

    def require(self) -> Workspace:
        """Return self if initialised, else raise a WorkspaceError that says how to create one."""
        if not self.exists():
            raise WorkspaceError(
                f"No edgeship workspace at {self.root}; run 'edgeship init' "
                f"(or pass --workspace DIR / set {ENV_HOME})."
            )
        return self
