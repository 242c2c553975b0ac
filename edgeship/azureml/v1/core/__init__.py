"""``azureml.core``: the names v1 deployment scripts import from it (see :mod:`edgeship.azureml`)."""

from __future__ import annotations

from typing import Any

from ..exceptions import refuse
from .conda_dependencies import CondaDependencies
from .environment import Environment
from .model import InferenceConfig, Model
from .webservice import Webservice
from .workspace import Workspace

__all__ = ["VERSION", "CondaDependencies", "Environment", "InferenceConfig", "Model", "Webservice", "Workspace"]

VERSION = "1.60.0+edgeship"  # the v1 API this layer follows; scripts print it

_INSTEAD = {
    "Dataset": "keep data in files and read them in your script; sample data is not needed to deploy",
    "Datastore": "keep data in files and pass their paths",
    "Experiment": "train where you train today and register the result with Model.register",
    "Run": "train where you train today and register the result with Model.register",
    "ScriptRunConfig": "train where you train today and register the result with Model.register",
    "ComputeTarget": "deploy with LocalWebservice, or write ACI/AKS artifacts with their deploy_configuration",
    "Image": "Model.deploy builds what it needs from a signed module",
}


def __getattr__(name: str) -> Any:
    if name in _INSTEAD:
        raise refuse(f"azureml.core.{name}", _INSTEAD[name])
    raise AttributeError(f"module 'azureml.core' has no attribute {name!r}")
