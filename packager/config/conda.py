"""A conda environment file reduced to what edgeship installs: its pip section.

Why: Azure ML v1 users describe their environment as a conda yml
(``myenv.yml`` with ``azureml-defaults`` under ``pip:``). edgeship installs
with pip from a wheelhouse, so only the pip section is honoured. Everything
else is reported, never silently dropped:

* Azure's own serving packages (``azureml-defaults`` and friends) are removed,
  because edgeship's scoring runtime replaces them; ``inference-schema`` is
  kept, since entry scripts import its decorators and edgeship supports them.
* a pinned ``python=X.Y`` that differs from the target's Python is a warning,
  not a failure: most scripts run on a newer Python.
* conda-only packages (``numpy=1.19`` outside ``pip:``) are listed in a warning,
  because they will not be installed; the user moves them into ``pip:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeship.errors import ConfigError

__all__ = ["AZURE_SERVING_PACKAGES", "CondaEnvironment", "parse_conda", "read_conda_file"]

# PEP 503-normalised names of the packages that make up Azure ML's serving stack.
AZURE_SERVING_PACKAGES = frozenset(
    {
        "azureml-defaults",
        "azureml-core",
        "azureml-inference-server-http",
        "azureml-model-management-sdk",
        "azureml-contrib-services",
        "azureml-monitoring",
        "azureml-sdk",
    }
)

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
# conda match specs: "python=3.6.2", "python==3.8", "python>=3.8", "conda-forge::python=3.9"
_CONDA_SPEC = re.compile(r"^(?:[\w.-]+::)?([A-Za-z0-9_.-]+)\s*(?:(==?|>=|<=|>|<|~=)\s*([^\s=<>,|]+))?")
_PINNED_PYTHON = re.compile(r"^(\d+)\.(\d+)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class CondaEnvironment:
    """What edgeship takes from a conda file; ``warnings`` are one line each."""

    requirements: tuple[str, ...] = ()
    python: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def read_conda_file(path: Path, target_python: str, *, key: str = "condaFile") -> CondaEnvironment:
    """Parse the conda yml at ``path``; ``key`` names the config key that pointed at it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key} {path} is not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc.strerror or exc}") from exc
    return parse_conda(data, target_python, source=f"{key} {path.name}")


def parse_conda(data: Any, target_python: str, *, source: str) -> CondaEnvironment:
    """Reduce a parsed conda environment mapping to pip requirements plus warnings.

    ``target_python`` is the Python the module will run on (``"3.11"``);
    ``source`` prefixes messages ("condaFile myenv.yml").
    """
    if data is None:
        return CondaEnvironment()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must be a conda environment mapping with 'dependencies', not a list or text"
        )
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise ConfigError(f"{source}: 'dependencies' must be a list")
    warnings: list[str] = []
    requirements: list[str] = []
    dropped: list[str] = []
    conda_only: list[str] = []
    python: str | None = None
    for dep in deps:
        if isinstance(dep, dict):
            for section, entries in dep.items():
                if section != "pip":
                    raise ConfigError(
                        f"{source}: unknown dependencies section '{section}:'; only 'pip:' is defined"
                    )
                for entry in entries or []:
                    if not isinstance(entry, str):
                        raise ConfigError(f"{source}: pip entry {entry!r} must be a requirement string")
                    requirement = entry.strip()
                    match = _NAME.match(requirement)
                    if (
                        match
                        and not requirement.startswith("-")
                        and _normalise(match.group(1)) in AZURE_SERVING_PACKAGES
                    ):
                        dropped.append(requirement)
                    elif requirement:
                        requirements.append(requirement)
            continue
        spec = str(dep).strip()
        match = _CONDA_SPEC.match(spec)
        name = match.group(1).lower() if match else spec
        if name == "python":
            version = match.group(3) if match else None
            python = version
            pinned = _PINNED_PYTHON.match(version or "")
            if pinned and f"{pinned.group(1)}.{pinned.group(2)}" != _major_minor(target_python):
                warnings.append(
                    f"{source} pins python {version} but the module runs on Python {target_python}; "
                    "edgeship continues: check that the entry script works on it"
                )
        elif name != "pip":
            conda_only.append(spec)
    if dropped:
        warnings.append(
            f"{source}: not installing {', '.join(dropped)}: edgeship's scoring runtime replaces Azure ML's "
            "serving packages"
        )
    if conda_only:
        warnings.append(
            f"{source}: conda packages are not installed (edgeship installs only the 'pip:' section): "
            f"{', '.join(conda_only)}; list them under 'pip:' if the entry script needs them"
        )
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise ConfigError(f"{source}: 'variables' must be a mapping of environment variables")
    return CondaEnvironment(
        requirements=tuple(requirements),
        python=python,
        variables={str(k): str(v) for k, v in variables.items()},
        warnings=tuple(warnings),
    )


def _major_minor(version: str) -> str:
    pinned = _PINNED_PYTHON.match(version)
    return f"{pinned.group(1)}.{pinned.group(2)}" if pinned else version
