"""``azureml.core.conda_dependencies.CondaDependencies``: a conda environment as a mapping.

It is only ever turned into the ``condaDependencies`` of an inference config, which
edgeship's packager reads as it reads a conda file (``packager/config/conda.py``:
pip packages become the module's requirements; ``azureml-defaults`` and the other
serving packages are provided by edgeship's scoring server).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import UserErrorException

__all__ = ["CondaDependencies"]


class CondaDependencies:
    """A conda specification; ``CondaDependencies("myenv.yml")`` reads one."""

    def __init__(self, conda_dependencies_file_path: str | os.PathLike[str] | None = None,
                 _underlying_structure: dict[str, Any] | None = None) -> None:
        if conda_dependencies_file_path is not None:
            path = Path(conda_dependencies_file_path)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
            except OSError as exc:
                raise UserErrorException(f"Cannot read conda file {path} ({exc.strerror}); give an existing file."
                                         ) from exc
            except yaml.YAMLError as exc:
                raise UserErrorException(f"Conda file {path} is not valid YAML: {exc}") from exc
            if not isinstance(data, dict):
                raise UserErrorException(f"Conda file {path} must hold a mapping with 'dependencies'.")
            self._conda_dependencies = data
        elif _underlying_structure is not None:
            self._conda_dependencies = copy.deepcopy(_underlying_structure)
        else:
            self._conda_dependencies = {"name": "project_environment", "dependencies": [], "channels": []}
        self._conda_dependencies.setdefault("dependencies", [])

    @staticmethod
    def create(pip_indexurl: str | None = None, pip_packages: list[str] | None = None,
               conda_packages: list[str] | None = None, python_version: str | None = None,
               pin_sdk_version: bool = True, channels: list[str] | None = None) -> CondaDependencies:
        del pin_sdk_version  # there is no SDK to pin: edgeship provides the serving packages
        deps = CondaDependencies()
        if python_version:
            deps.set_python_version(python_version)
        for channel in channels or ():
            deps.add_channel(channel)
        for package in conda_packages or ():
            deps.add_conda_package(package)
        for package in pip_packages or ():
            deps.add_pip_package(package)
        if pip_indexurl:
            deps.set_pip_option(f"--index-url {pip_indexurl}")
        return deps

    def _pip_list(self) -> list[Any]:
        deps = self._conda_dependencies["dependencies"]
        for item in deps:
            if isinstance(item, dict) and "pip" in item:
                return list(item["pip"])
        return []

    def _set_pip_list(self, packages: list[Any]) -> None:
        deps = [d for d in self._conda_dependencies["dependencies"] if not (isinstance(d, dict) and "pip" in d)]
        if packages:
            deps.append({"pip": packages})
        self._conda_dependencies["dependencies"] = deps

    @staticmethod
    def _name_of(spec: str) -> str:
        import re

        return re.split(r"[\s\[<>=!~;@]", spec.strip(), maxsplit=1)[0].lower()

    def add_pip_package(self, pip_package: str) -> None:
        name = self._name_of(pip_package)
        self._set_pip_list([p for p in self._pip_list() if self._name_of(str(p)) != name] + [pip_package])

    def remove_pip_package(self, pip_package: str) -> None:
        name = self._name_of(pip_package)
        self._set_pip_list([p for p in self._pip_list() if self._name_of(str(p)) != name])

    def set_pip_option(self, pip_option: str) -> None:
        self._set_pip_list([p for p in self._pip_list() if str(p) != pip_option] + [pip_option])

    def add_conda_package(self, conda_package: str) -> None:
        name = self._name_of(conda_package)
        deps = self._conda_dependencies["dependencies"]
        deps[:] = [d for d in deps if isinstance(d, dict) or self._name_of(str(d)) != name] + [conda_package]

    def remove_conda_package(self, conda_package: str) -> None:
        name = self._name_of(conda_package)
        deps = self._conda_dependencies["dependencies"]
        deps[:] = [d for d in deps if isinstance(d, dict) or self._name_of(str(d)) != name]

    def add_channel(self, channel: str) -> None:
        channels = self._conda_dependencies.setdefault("channels", [])
        if channel not in channels:
            channels.append(channel)

    def set_python_version(self, version: str) -> None:
        self.add_conda_package(f"python={version}")

    @property
    def pip_packages(self) -> list[str]:
        return [str(p) for p in self._pip_list() if not str(p).startswith("-")]

    @property
    def conda_packages(self) -> list[str]:
        return [str(d) for d in self._conda_dependencies["dependencies"] if not isinstance(d, dict)]

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._conda_dependencies)

    def serialize_to_string(self) -> str:
        return str(yaml.safe_dump(self._conda_dependencies, sort_keys=False, default_flow_style=False))

    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        target = Path(path or "conda_dependencies.yml")
        target.write_text(self.serialize_to_string())
        return str(target)

    save_to_file = save
