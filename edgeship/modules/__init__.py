"""Modules: the signed unit edgeship ships. The manifest, its verification, and the workspace's module store.

``ModuleManifest`` here is the pydantic model (packager, hub), loaded on first use; the
agent reads manifests with :mod:`edgeship.modules.plain` and never loads pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeship.modules.plain import ENVELOPE_FILE, MANIFEST_FILE

if TYPE_CHECKING:
    from edgeship.modules.manifest import ModuleManifest

__all__ = ["ENVELOPE_FILE", "MANIFEST_FILE", "ModuleManifest"]


def __getattr__(name: str) -> Any:
    if name == "ModuleManifest":
        from edgeship.modules.manifest import ModuleManifest

        return ModuleManifest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
