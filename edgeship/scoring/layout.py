"""The Azure ML model layout: ``<root>/azureml-models/<name>/<version>/<file or folder>``.

Two ways in: :func:`lay_out_models` builds the layout from a workspace's registry
(what ``edgeship serve -m`` does), and :func:`scan_models` reads a layout that
already exists (a packaged bundle or image, which has no workspace). The server
core only ever sees a prepared root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.errors import InputError, ScoringError
from edgeship.fsutil import atomic_dir, sweep_scratch

if TYPE_CHECKING:  # the registry (sqlite3 and friends) is loaded only by lay_out_models: serving never needs it
    from edgeship.registry import ModelRef
    from edgeship.workspace import Workspace

__all__ = [
    "MODELS_FOLDER",
    "DeployedModel",
    "azureml_model_dir",
    "lay_out_models",
    "resolve_root",
    "scan_models",
]

MODELS_FOLDER = "azureml-models"


@dataclass(frozen=True)
class DeployedModel:
    """One model version inside a layout; ``path`` is its file or folder."""

    name: str
    version: int
    version_dir: Path
    path: Path  # the version folder's only entry, or the folder itself when it holds several


def resolve_root(path: str | os.PathLike[str]) -> Path:
    """Accept either the folder holding ``azureml-models`` or ``azureml-models`` itself."""
    root = Path(path).expanduser().resolve()
    if root.name == MODELS_FOLDER:
        root = root.parent
    if not (root / MODELS_FOLDER).is_dir():
        raise InputError(
            f"{path} has no {MODELS_FOLDER}/ folder; give a folder laid out as "
            f"{MODELS_FOLDER}/<name>/<version>/<model file>, or serve registered models with -m NAME:VER."
        )
    return root


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link (instant, no extra space) where the filesystem allows, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def lay_out_models(workspace: Workspace, refs: Sequence[ModelRef], root: Path) -> list[DeployedModel]:
    """Materialize verified copies of ``refs`` under ``root/azureml-models``.

    Unknown models raise the registry's ModelNotFoundError. Laying out the same
    version twice is a no-op, so a restarted service reuses its folder. Each version
    folder is built beside its place and renamed into it: a layout killed half-way
    leaves no half-copied model that a later run would take for a whole one.
    """
    from edgeship.registry import Model

    deployed: list[DeployedModel] = []
    seen: set[tuple[str, int]] = set()
    for ref in refs:
        model = Model.get(workspace, ref.name, ref.version)
        if (model.name, model.version) in seen:
            continue
        seen.add((model.name, model.version))
        source = model.materialize()
        version_dir = root / MODELS_FOLDER / model.name / str(model.version)
        target = version_dir / source.name
        if not target.exists():
            version_dir.parent.mkdir(parents=True, exist_ok=True)
            sweep_scratch(version_dir.parent)  # what a killed earlier layout left behind
            with atomic_dir(version_dir) as build:  # all of the version folder appears, or none of it
                if source.is_dir():
                    shutil.copytree(source, build / source.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(str(source), str(build / source.name))
        deployed.append(DeployedModel(model.name, model.version, version_dir, target))
    return deployed


def scan_models(root: Path) -> list[DeployedModel]:
    """Every ``<name>/<version>`` in a layout, sorted; the entry is the version folder's only child."""
    found: list[DeployedModel] = []
    models_dir = root / MODELS_FOLDER
    for name_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        for version_dir in sorted(
            (p for p in name_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        ):
            entries = [p for p in version_dir.iterdir() if not p.name.startswith(".")]
            if not entries:
                raise ScoringError(f"Model folder {version_dir} is empty; put the model file in it.")
            path = entries[0] if len(entries) == 1 else version_dir
            found.append(DeployedModel(name_dir.name, int(version_dir.name), version_dir, path))
    return found


def azureml_model_dir(root: Path, deployed: Sequence[DeployedModel]) -> str:
    """``AZUREML_MODEL_DIR`` as Azure ML sets it: the version folder for one model, else the models root."""
    if len(deployed) == 1:
        return str(deployed[0].version_dir)
    return str(root / MODELS_FOLDER)
