"""An ``azureml.core``-compatible layer: unmodified Azure ML v1 deployment scripts run on edgeship.

``edgeship azureml run deploy.py`` installs the modules of :mod:`edgeship.azureml.v1`
under the names ``azureml``, ``azureml.core``, ``azureml.core.model`` ... for that one
command (:mod:`edgeship.azureml.layer`), so a real ``azureml-core`` install is never
shadowed anywhere else. The classes are thin: registering is edgeship's registry,
packaging and signing is :func:`edgeship.release.package` (the step every release
takes), running is :class:`edgeship.local_services.LocalServices` (what ``edgeship
deploy`` runs). A call the layer cannot honour raises
:class:`~edgeship.azureml.v1.exceptions.UnsupportedCallError` naming the call and what
to use instead. docs/azureml-migration.md lists what maps to what; ADR 0033 says why.
"""

from __future__ import annotations

from edgeship.azureml.layer import MODULES, installed, run_script

__all__ = ["MODULES", "installed", "run_script"]
