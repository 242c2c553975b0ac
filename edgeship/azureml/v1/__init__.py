"""``azureml``: the package Azure ML v1 scripts import, as edgeship provides it (see :mod:`edgeship.azureml`)."""

from __future__ import annotations

from . import core, exceptions

__all__ = ["core", "exceptions"]
