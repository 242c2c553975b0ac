"""The scoring server: runs an unmodified Azure ML v1 entry script, or a model without code.

Public surface: :class:`ServiceConfig` (what to serve), :func:`lay_out_models` /
:func:`scan_models` (the ``azureml-models`` layout), :func:`build_app` (load +
``init()``, returns the ASGI app) and :func:`serve` (bind, run, supervise workers).
Heavy dependencies (uvicorn, onnxruntime, litert) are imported only when used.
"""

from __future__ import annotations

from edgeship.scoring.config import ServiceConfig
from edgeship.scoring.layout import (
    DeployedModel,
    azureml_model_dir,
    lay_out_models,
    resolve_root,
    scan_models,
)
from edgeship.scoring.server import build_app, check_ssl, serve

__all__ = [
    "DeployedModel",
    "ServiceConfig",
    "azureml_model_dir",
    "build_app",
    "check_ssl",
    "lay_out_models",
    "resolve_root",
    "scan_models",
    "serve",
]
