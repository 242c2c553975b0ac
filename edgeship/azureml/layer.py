"""Putting the v1 modules under the ``azureml`` names for one command, and running a script with them.

Why aliases in ``sys.modules`` and not a folder on ``sys.path``: the layer's modules
stay ordinary edgeship modules (typed, tested, importable as ``edgeship.azureml.v1``),
and nothing outside ``edgeship azureml run`` can see them under Azure's names. A
submodule of ``azureml`` the layer does not provide (``azureml.core.compute``,
``azureml.train``...) fails with an ImportError that says so, rather than a bare
"No module named".
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import runpy
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgeship.errors import InputError

__all__ = ["MODULES", "installed", "run_script"]

_ROOT = "edgeship.azureml.v1"
# Azure's name -> the module of this layer that stands in for it.
MODULES = {
    "azureml": _ROOT,
    "azureml.exceptions": f"{_ROOT}.exceptions",
    "azureml.core": f"{_ROOT}.core",
    "azureml.core.workspace": f"{_ROOT}.core.workspace",
    "azureml.core.model": f"{_ROOT}.core.model",
    "azureml.core.environment": f"{_ROOT}.core.environment",
    "azureml.core.conda_dependencies": f"{_ROOT}.core.conda_dependencies",
    "azureml.core.runconfig": f"{_ROOT}.core.runconfig",
    "azureml.core.resource_configuration": f"{_ROOT}.core.resource_configuration",
    "azureml.core.webservice": f"{_ROOT}.core.webservice",
    "azureml.core.webservice.local": f"{_ROOT}.core.webservice",
    "azureml.core.webservice.aci": f"{_ROOT}.core.webservice",
    "azureml.core.webservice.aks": f"{_ROOT}.core.webservice",
    "azureml.core.webservice.webservice": f"{_ROOT}.core.webservice",
}


class _Refuser(importlib.abc.MetaPathFinder):
    """Any other ``azureml.*`` import: an ImportError naming what the layer provides."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: object = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "azureml" or fullname.startswith("azureml."):
            provided = ", ".join(sorted(n for n in MODULES if n.count(".") <= 2))
            raise ImportError(
                f"{fullname} is not part of edgeship's Azure ML v1 layer, which provides {provided}; "
                "docs/azureml-migration.md says what to use instead.",
                name=fullname,
            )
        return None


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """The v1 modules under Azure's names for the duration of the block; what was there before is put back."""
    saved = {name: sys.modules[name] for name in list(sys.modules) if name == "azureml" or name.startswith("azureml.")}
    for name in saved:
        del sys.modules[name]
    refuser = _Refuser()
    for alias, real in MODULES.items():
        sys.modules[alias] = importlib.import_module(real)
    sys.meta_path.insert(0, refuser)
    try:
        yield
    finally:
        sys.meta_path.remove(refuser)
        for name in [n for n in sys.modules if n == "azureml" or n.startswith("azureml.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def run_script(script: Path, args: Sequence[str]) -> None:
    """Run ``script`` as ``__main__``, ``args`` in ``sys.argv`` and its folder first on ``sys.path``, as python does."""
    if not script.is_file():
        raise InputError(f"{script} is not a file; give the path of the v1 deployment script to run.")
    if script.suffix != ".py":
        raise InputError(f"{script} is not a Python file (.py); give the v1 deployment script to run.")
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.resolve().parent))
    try:
        with installed():
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old_argv
        sys.path[:] = old_path
