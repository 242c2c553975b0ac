"""Make the ``azureml`` stand-ins importable in this (scoring) process only.

The stand-ins live in ``_shims/`` inside the edgeship package and are never
installed as a top-level ``azureml`` package. ``azureml`` and ``azureml.contrib``
are namespace packages there (no ``__init__.py``) and the folder goes to the *end*
of ``sys.path``: a real ``azureml-core``/``azureml-contrib-services`` install is
therefore always found first, module by module, and the stand-ins fill in only
what is missing.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__all__ = ["SHIM_DIR", "install_shims"]

SHIM_DIR = Path(__file__).resolve().parent / "_shims"


def install_shims() -> None:
    path = str(SHIM_DIR)
    if path not in sys.path:
        sys.path.append(path)
        importlib.invalidate_caches()
