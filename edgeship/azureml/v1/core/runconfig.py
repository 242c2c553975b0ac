"""``azureml.core.runconfig``: only what deployment scripts import from it (``CondaDependencies``).

Training runs (``RunConfiguration``, ``DockerConfiguration``) are not edgeship's job.
"""

from __future__ import annotations

from ..exceptions import refuse
from .conda_dependencies import CondaDependencies

__all__ = ["CondaDependencies", "DockerConfiguration", "RunConfiguration"]


class RunConfiguration:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise refuse("RunConfiguration", "train where you train today and register the result with Model.register")


class DockerConfiguration:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise refuse("DockerConfiguration", "set environment.docker.base_image for the image a module builds from")
