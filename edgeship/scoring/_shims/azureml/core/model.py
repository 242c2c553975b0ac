"""``azureml.core.model.Model.get_model_path`` as Azure ML resolves it inside a deployed service.

Models are laid out as ``<root>/azureml-models/<name>/<version>/<file or folder>``.
``AZUREML_MODEL_DIR`` points at ``<root>/azureml-models`` when several models are
deployed and at ``<root>/azureml-models/<name>/<version>`` when there is one; both
forms resolve here. This module must import nothing from outside the standard
library except edgeship's error tree, so it loads in any scoring environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeship.errors import ScoringError

__all__ = ["MODELS_FOLDER", "Model", "ModelNotFoundException", "models_root"]

MODELS_FOLDER = "azureml-models"


class ModelNotFoundException(ScoringError):
    """The requested model (or version) is not deployed with this service."""


def models_root() -> Path:
    """The ``azureml-models`` folder this service's models live in.

    Falls back to ``./azureml-models`` (what Azure ML's local deployments used)
    when ``AZUREML_MODEL_DIR`` is not set.
    """
    env = os.environ.get("AZUREML_MODEL_DIR")
    if not env:
        return Path.cwd() / MODELS_FOLDER
    model_dir = Path(env)
    if model_dir.name == MODELS_FOLDER:
        return model_dir
    if model_dir.parent.parent.name == MODELS_FOLDER:
        return model_dir.parent.parent
    nested = model_dir / MODELS_FOLDER
    return nested if nested.is_dir() else model_dir


def _versions(name_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit())


class Model:
    """The part of Azure ML's ``Model`` an entry script uses at run time."""

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: object = None) -> str:
        """Absolute path of a deployed model's file or folder.

        ``version=None`` picks the highest deployed version. When the version folder
        holds exactly one entry that entry is returned, otherwise the folder itself.
        """
        del _workspace  # accepted for signature compatibility; a service has no workspace
        root = models_root()
        name_dir = root / model_name
        if not name_dir.is_dir():
            deployed = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise ModelNotFoundException(
                f"Model {model_name!r} is not deployed with this service (deployed: "
                f"{', '.join(deployed) or 'none'}); add it with -m {model_name}[:VERSION]."
            )
        versions = _versions(name_dir)
        if version is None:
            if not versions:
                raise ModelNotFoundException(f"Model {model_name!r} has no version folder under {name_dir}.")
            version = versions[-1]
        version_dir = name_dir / str(int(version))
        if not version_dir.is_dir():
            raise ModelNotFoundException(
                f"Version {version} of model {model_name!r} is not deployed (deployed versions: "
                f"{', '.join(map(str, versions)) or 'none'})."
            )
        entries = [p for p in version_dir.iterdir() if not p.name.startswith(".")]
        return str(entries[0] if len(entries) == 1 else version_dir)
