"""Modules: the signed unit edgeship ships. The manifest, its verification, and the workspace's module store."""

from __future__ import annotations

from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE, ModuleManifest

__all__ = ["ENVELOPE_FILE", "MANIFEST_FILE", "ModuleManifest"]
