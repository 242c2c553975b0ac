"""The demo's release side: a workspace with keys, a trust root, and signed modules of the digits model.

Everything an operator would do with ``edgeship keys``, ``model register`` and
``edgeship package``, done through the same functions those commands call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edgeship.demo.model import TrainedModel, train_digits
from edgeship.fsutil import atomic_write_text
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
    version: int
    model: TrainedModel
    module_dir: Path


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
        from edgeship.packager.package import PackageRequest, package_module
        from edgeship.registry import Model
        from edgeship.registry.refs import ModelRef

        model = train_digits(version, self.root / f"train-v{version}")
        registered = Model.register(
            self.workspace,
            model.path,
            MODEL_NAME,
            tags={"framework": "onnx", "dataset": "digits", "hidden": str(model.hidden[0])},
            properties={"accuracy": f"{model.accuracy:.4f}"},
            model_framework="onnx",
        )
        result = package_module(
            self.workspace,
            PackageRequest(
                models=[ModelRef(MODEL_NAME, registered.version)],
                output=self.root / f"module-v{registered.version}",
                inference_config=APP_DIR / "inferenceconfig.json",
                image=False,
                name=MODEL_NAME,
            ),
            console=self.console,
        )
        return Release(registered.version, model, result.output)
