"""The demo's release side: a workspace with keys, a trust root, and signed modules of the digits model.

Everything an operator would do with ``edgeship keys``, ``model register`` and
``edgeship release``, done through the same functions those commands call: a version
is packaged and signed by :func:`edgeship.release.package`, the step ``release run``
and ``release watch`` take too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edgeship.demo.model import TrainedModel, train_digits
from edgeship.fsutil import atomic_write_text
from edgeship.modules.store import StoredModule
from edgeship.workspace import Workspace

__all__ = ["APP_DIR", "Release", "ReleaseSide", "wheel_cache_dir"]

APP_DIR = Path(__file__).resolve().parent / "app"  # score.py, inferenceconfig.json, environment.yml
MODEL_NAME = "digits"


def wheel_cache_dir() -> Path:
    """Wheels downloaded by one demo run are reused by the next (``$XDG_CACHE_HOME/edgeship/wheels``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgeship" / "wheels"


@dataclass(frozen=True)
class Release:
    version: int  # the model version, and the module's (a fresh workspace numbers both from 1)
    model: TrainedModel
    module: StoredModule

    @property
    def module_dir(self) -> Path:
        return self.module.directory


class ReleaseSide:
    """The release engineer's workspace: ``release``, ``hub`` and ``root`` keys and the trust root."""

    def __init__(self, root: Path, console: Console) -> None:
        from edgeship.signing import Keyring, TrustRoot, sign_trust_root

        self.root = root
        self.console = console
        self.workspace = Workspace.at(root / "workspace")
        self.workspace.create()
        cache = wheel_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        wheels = self.workspace.cache_dir / "wheels"
        if not wheels.exists():
            wheels.symlink_to(cache, target_is_directory=True)
        ring = Keyring(self.workspace)
        for role in ("root", "release", "hub"):
            ring.create(role, role)
        trust = TrustRoot.build(
            root=[ring.signer("root").public_key],
            release=[ring.signer("release").public_key],
            hub=[ring.signer("hub").public_key],
        )
        self.trust_root_file = root / "trust-root.json"
        atomic_write_text(self.trust_root_file, sign_trust_root(trust, [ring.signer("root")]).to_json())

    def release(self, version: int) -> Release:
        """Train model version ``version``, register it, and package it as a signed bundle module."""
        from edgeship.registry import Model
        from edgeship.registry.refs import ModelRef
        from edgeship.release import PackageOptions, package

        model = train_digits(version, self.root / f"train-v{version}")
        registered = Model.register(
            self.workspace,
            model.path,
            MODEL_NAME,
            tags={"framework": "onnx", "dataset": "digits", "hidden": str(model.hidden[0])},
            properties={"accuracy": f"{model.accuracy:.4f}"},
            model_framework="onnx",
        )
        module, _warnings = package(
            self.workspace,
            [ModelRef(MODEL_NAME, registered.version)],
            PackageOptions(inference_config=APP_DIR / "inferenceconfig.json", image=False, module_name=MODEL_NAME),
            console=self.console,
        )
        return Release(registered.version, model, module)
