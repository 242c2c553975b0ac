"""``azureml.core.Environment``: a name, a Python section (conda dependencies) and variables.

What edgeship installs is the pip part of the conda dependencies (the packager's
rule for every inference config); ``docker.base_image`` becomes the image to build
from. ``register`` keeps an environment in the workspace (``azureml/environments/``)
so ``Environment.get(ws, name)`` finds it; Azure's curated ``AzureML-*`` environments
are not there and say what to write instead.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from edgeship.fsutil import atomic_write_text

from ..exceptions import UserErrorException, refuse
from .conda_dependencies import CondaDependencies

__all__ = ["DockerSection", "Environment", "PythonSection"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class PythonSection:
    def __init__(self) -> None:
        self.conda_dependencies: CondaDependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path = "python"
        self.conda_dependencies_file: str | None = None


class DockerSection:
    def __init__(self) -> None:
        self.enabled = False
        self.base_image: str | None = None
        self.base_dockerfile: str | None = None
        self.gpu_support = False


class Environment:
    """What the entry script needs installed."""

    def __init__(self, name: str, **_ignored: object) -> None:
        if not isinstance(name, str) or not name:
            raise UserErrorException("Environment(name) needs a non-empty name.")
        self.name = name
        self.version: str | None = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.inferencing_stack_version: str | None = None

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(file_path)
        return env

    @staticmethod
    def from_pip_requirements(name: str, file_path: str | os.PathLike[str], pip_version: str | None = None,
                              ) -> Environment:
        path = Path(file_path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except OSError as exc:
            raise UserErrorException(f"Cannot read requirements file {path} ({exc.strerror}).") from exc
        env = Environment(name)
        deps = CondaDependencies()
        if pip_version:
            deps.add_conda_package(f"pip={pip_version}")
        for line in lines:
            text = line.split("#", 1)[0].strip()
            if text:
                deps.add_pip_package(text)
        env.python.conda_dependencies = deps
        return env

    @staticmethod
    def from_docker_image(name: str, image: str, container_registry: object = None,
                          conda_specification: str | None = None, pip_requirements: str | None = None,
                          ) -> Environment:
        if conda_specification:
            env = Environment.from_conda_specification(name, conda_specification)
        elif pip_requirements:
            env = Environment.from_pip_requirements(name, pip_requirements)
        else:
            env = Environment(name)
        env.docker.base_image = image
        return env

    def to_inference_environment(self) -> dict[str, Any]:
        """The ``environment`` block of an inferenceconfig.json (``Environment.save_to_directory``'s form)."""
        python: dict[str, Any] = {"userManagedDependencies": bool(self.python.user_managed_dependencies),
                                  "condaDependencies": self.python.conda_dependencies.as_dict()}
        variables = {str(k): str(v) for k, v in self.environment_variables.items()}
        block: dict[str, Any] = {"name": self.name, "python": python, "environmentVariables": variables}
        if self.docker.base_image:
            block["docker"] = {"baseImage": self.docker.base_image}
        return block

    # -- the workspace's environments ------------------------------------------
    @staticmethod
    def _folder(workspace: Any) -> Path:
        return Path(workspace.edgeship.root) / "azureml" / "environments"

    def register(self, workspace: Any) -> Environment:
        if not _NAME.match(self.name):
            raise UserErrorException(f"Environment name {self.name!r} is not usable; use letters, digits, . _ -.")
        folder = self._folder(workspace)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{self.name}.json", json.dumps(self.to_inference_environment(), indent=2) + "\n")
        return self

    @staticmethod
    def get(workspace: Any, name: str, version: str | None = None, label: str | None = None) -> Environment:
        path = Environment._folder(workspace) / f"{name}.json"
        if name.startswith("AzureML-") and not path.is_file():
            raise refuse(f"Environment.get(ws, {name!r}) (a curated Azure environment)",
                         "build it with Environment(name) and environment.python.conda_dependencies"
                         ".add_pip_package(...) for the packages your score.py imports")
        if not _NAME.match(name) or not path.is_file():
            raise UserErrorException(f"No environment {name!r} is registered in this workspace; "
                                     "call environment.register(ws) first.")
        data = json.loads(path.read_text())
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(_underlying_structure=data["python"]["condaDependencies"])
        env.python.user_managed_dependencies = bool(data["python"].get("userManagedDependencies"))
        env.environment_variables = dict(data.get("environmentVariables") or {})
        env.docker.base_image = (data.get("docker") or {}).get("baseImage")
        return env

    @staticmethod
    def list(workspace: Any) -> dict[str, Environment]:
        folder = Environment._folder(workspace)
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return {n: Environment.get(workspace, n) for n in names}

    def clone(self, new_name: str) -> Environment:
        env = Environment(new_name)
        conda = self.python.conda_dependencies.as_dict()
        env.python.conda_dependencies = CondaDependencies(_underlying_structure=conda)
        env.python.user_managed_dependencies = self.python.user_managed_dependencies
        env.environment_variables = dict(self.environment_variables)
        env.docker.base_image = self.docker.base_image
        return env

    def build(self, *args: object, **kwargs: object) -> None:
        raise refuse("Environment.build", "edgeship builds the environment when it packages the module "
                     "(Model.deploy or 'edgeship package')")

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, pip={self.python.conda_dependencies.pip_packages})"
