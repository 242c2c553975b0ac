"""A hub workspace on disk, as an operator would set it up: keys, a trust root and a packaged module.

``edgeship hub serve`` and :class:`edgeship.hub.server.HubServer` read their keys
from the workspace, so these tests cannot use :class:`HubWorld`'s in-memory keys
alone; the world's signers are replaced by the workspace's own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hub_world import HubWorld

from edgeship.hub.server import TRUST_ROOT_FILE
from edgeship.modules.manifest import MANIFEST_FILE, ModuleManifest
from edgeship.modules.store import ModuleStore
from edgeship.signing import Keyring, sign_trust_root
from edgeship.workspace import Workspace

__all__ = ["make_hub_workspace"]


def make_hub_workspace(root: Path, *, modules: int = 1, trust_root: bool = True) -> tuple[Workspace, HubWorld]:
    """A workspace with root/release/hub keys, ``trust-root.json`` and ``digits`` versions 1..``modules``."""
    ws = Workspace.at(root)
    ws.create()
    ring = Keyring(ws)
    for role in ("root", "release", "hub"):
        ring.create(role)
    world = HubWorld(root / "world", release=ring.signer("release"), hub_key=ring.signer("hub"),
                     root_key=ring.signer("root"))
    if trust_root:
        envelope = sign_trust_root(world.trust_root(), [world.root_key])
        (ws.root / TRUST_ROOT_FILE).write_text(envelope.to_json())
    store = ModuleStore(ws)
    for _ in range(modules):
        version = store.reserve("digits")
        built = world.module("digits", version)
        manifest = ModuleManifest.from_bytes((built / MANIFEST_FILE).read_bytes())
        store.commit(manifest, built, "sha256:" + hashlib.sha256(manifest.to_bytes()).hexdigest())
    return ws, world
