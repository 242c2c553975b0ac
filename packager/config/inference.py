"""Azure ML v1 ``inferenceconfig.json`` (or .yml), read as ``az ml model deploy --ic`` reads it.

Why: data scientists arrive with the file they already have. Every key Azure
ML defines is accepted (``extraDockerfileSteps`` as azure-cli-ml reads it and
``extraDockerFileSteps`` as the docs spell it); keys Azure does not define are
errors. Paths resolve as Azure ML resolves them: ``sourceDirectory`` against
the config file's folder, and ``entryScript``, ``condaFile``,
``extraDockerfileSteps``, ``schemaFile`` and ``dependencies`` against
``sourceDirectory`` when it is set (else against the config file's folder). A
path not found there is looked up in the current folder, as ``az ml`` did (it
passed the file's strings to ``InferenceConfig``, which opened them from the
current folder), so Azure's sample ``--ic .azureml/inferenceconfig.json`` with
``"condaFile": ".azureml/conda_dependencies.yml"`` works unchanged (ADR 0033).
When ``environment`` is given, Azure ignores ``runtime``/``condaFile``/
``baseImage``...; edgeship does the same and says so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from edgeship.errors import ConfigError

from ._loading import AzureModel, read_mapping, validate_model
from .conda import CondaEnvironment, parse_conda, read_conda_file

__all__ = ["InferenceConfig", "RegistryCredentials", "load_inference_config"]

_HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


class _Registry(AzureModel):
    address: str | None = None
    username: str | None = None
    password: str | None = None
    registry_identity: dict[str, Any] | None = Field(None, alias="registryIdentity")


class _Platform(AzureModel):
    os: str | None = None
    architecture: str | None = None


class _Docker(AzureModel):
    enabled: bool | None = None
    base_image: str | None = Field(None, alias="baseImage")
    base_dockerfile: str | None = Field(None, alias="baseDockerfile")
    base_image_registry: _Registry | None = Field(None, alias="baseImageRegistry")
    shared_volumes: bool | None = Field(None, alias="sharedVolumes")
    shm_size: str | None = Field(None, alias="shmSize")
    arguments: list[str] | None = None
    gpu_support: bool | None = Field(None, alias="gpuSupport")
    platform: _Platform | None = None
    build_context: dict[str, Any] | None = Field(None, alias="buildContext")


class _Python(AzureModel):
    user_managed_dependencies: bool | None = Field(None, alias="userManagedDependencies")
    interpreter_path: str | None = Field(None, alias="interpreterPath")
    conda_dependencies_file: str | None = Field(None, alias="condaDependenciesFile")
    conda_dependencies: dict[str, Any] | None = Field(None, alias="condaDependencies")
    base_conda_environment: str | None = Field(None, alias="baseCondaEnvironment")


class _Environment(AzureModel):
    """Azure ML's serialised ``Environment`` (as ``Environment.save_to_directory`` writes it)."""

    name: str | None = None
    version: str | int | None = None
    python: _Python | None = None
    environment_variables: dict[str, Any] | None = Field(None, alias="environmentVariables")
    docker: _Docker | None = None
    spark: dict[str, Any] | None = None
    databricks: dict[str, Any] | None = None
    r: dict[str, Any] | None = None
    inferencing_stack_version: str | None = Field(None, alias="inferencingStackVersion")
    asset_id: str | None = Field(None, alias="assetId")


class _InferenceFile(AzureModel):
    entry_script: str | None = Field(None, alias="entryScript")
    runtime: str | None = None
    conda_file: str | None = Field(None, alias="condaFile")
    extra_dockerfile_steps: str | None = Field(None, alias="extraDockerfileSteps")
    extra_docker_file_steps: str | None = Field(None, alias="extraDockerFileSteps")
    source_directory: str | None = Field(None, alias="sourceDirectory")
    enable_gpu: bool | None = Field(None, alias="enableGpu")
    base_image: str | None = Field(None, alias="baseImage")
    base_image_registry: _Registry | None = Field(None, alias="baseImageRegistry")
    cuda_version: str | float | None = Field(None, alias="cudaVersion")
    environment: _Environment | None = None
    description: str | None = None
    schema_file: str | None = Field(None, alias="schemaFile")
    dependencies: list[str] | None = None


@dataclass(frozen=True)
class RegistryCredentials:
    """Where a private base image lives (``baseImageRegistry``)."""

    address: str | None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class InferenceConfig:
    """A validated inference config; every path is absolute and exists."""

    path: Path
    entry_script: Path
    source_directory: Path | None = None
    runtime: str = "python"
    conda_file: Path | None = None
    requirements: tuple[str, ...] = ()
    python_version: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_dockerfile_steps: Path | None = None
    schema_file: Path | None = None
    dependencies: tuple[Path, ...] = ()
    base_image: str | None = None
    base_image_registry: RegistryCredentials | None = None
    description: str | None = None
    environment_name: str | None = None
    warnings: tuple[str, ...] = ()


def load_inference_config(path: str | Path, *, target_python: str = _HERE) -> InferenceConfig:
    """Read and validate an Azure ML v1 inference config.

    ``target_python`` is the ``X.Y`` Python the module will run on; a conda file
    pinning another one gives a warning. Raises ConfigError naming the key.
    """
    path = Path(path).resolve()
    raw = validate_model(_InferenceFile, read_mapping(path, "inference config"), path)
    warnings: list[str] = []
    name = path.name

    if (
        raw.extra_dockerfile_steps
        and raw.extra_docker_file_steps
        and (raw.extra_dockerfile_steps != raw.extra_docker_file_steps)
    ):
        raise ConfigError(
            f"{path}: 'extraDockerfileSteps' and 'extraDockerFileSteps' disagree; keep one of them"
        )
    steps = raw.extra_dockerfile_steps or raw.extra_docker_file_steps

    base = path.parent
    cwd = Path.cwd()
    source_dir: Path | None = None
    if raw.source_directory:
        source_dir = (base / raw.source_directory).resolve()
        if not source_dir.is_dir() and (cwd / raw.source_directory).is_dir():
            source_dir = (cwd / raw.source_directory).resolve()  # as az ml resolved it (see the docstring)
        if not source_dir.is_dir():
            raise ConfigError(
                f"{path}: sourceDirectory '{raw.source_directory}' is not a folder ({source_dir})"
            )
    relative_to = source_dir or base

    def resolve(key: str, value: str, *, folder_ok: bool = False) -> Path:
        candidate = (relative_to / value).resolve()
        exists = candidate.exists() if folder_ok else candidate.is_file()
        if exists:
            return candidate
        if source_dir is None:
            # azure-cli-ml handed the file's strings to azureml-core's InferenceConfig unchanged, which
            # opened them from the current folder: '.azureml/conda_dependencies.yml' beside
            # '--ic .azureml/inferenceconfig.json' in Azure's own sample only works that way.
            from_cwd = (cwd / value).resolve()
            if from_cwd.exists() if folder_ok else from_cwd.is_file():
                return from_cwd
        hint = ""
        if source_dir is not None:
            hint = " (Azure ML resolves it relative to sourceDirectory)"
            beside = (base / value).resolve()
            if beside.is_file():
                hint += f"; a file exists at {beside}: move it into sourceDirectory or fix the path"
        raise ConfigError(f"{path}: {key} '{value}' not found at {candidate}{hint}")

    if not raw.entry_script:
        raise ConfigError(f"{path}: key 'entryScript' is required (the score.py with init() and run())")
    entry_script = resolve("entryScript", raw.entry_script)
    if entry_script.suffix != ".py":
        raise ConfigError(f"{path}: entryScript '{raw.entry_script}' must be a Python file (.py)")

    runtime = (raw.runtime or "python").lower()
    env_block = raw.environment
    if env_block is not None:
        ignored = [
            key
            for key, value in (
                ("runtime", raw.runtime),
                ("condaFile", raw.conda_file),
                ("extraDockerfileSteps", steps),
                ("enableGpu", raw.enable_gpu),
                ("baseImage", raw.base_image),
                ("baseImageRegistry", raw.base_image_registry),
                ("cudaVersion", raw.cuda_version),
            )
            if value is not None
        ]
        if ignored:
            warnings.append(
                f"{name}: {', '.join(ignored)} ignored because 'environment' is set (as Azure ML does)"
            )
    elif runtime != "python":
        raise ConfigError(
            f"{path}: runtime '{raw.runtime}' is not supported; edgeship runs Python entry scripts "
            "(runtime: python)"
        )

    conda = CondaEnvironment()
    conda_path: Path | None = None
    env: dict[str, str] = {}
    base_image = raw.base_image
    registry = raw.base_image_registry
    environment_name: str | None = None
    if env_block is None:
        if raw.conda_file:
            conda_path = resolve("condaFile", raw.conda_file)
            conda = read_conda_file(conda_path, target_python)
        if raw.enable_gpu:
            warnings.append(f"{name}: enableGpu ignored: edgeship modules run on CPU")
        if raw.cuda_version is not None:
            warnings.append(f"{name}: cudaVersion ignored: edgeship modules run on CPU")
    else:
        environment_name = env_block.name
        conda, conda_path, env_warnings = _from_environment(env_block, path, resolve, target_python)
        warnings.extend(env_warnings)
        env.update({str(k): str(v) for k, v in (env_block.environment_variables or {}).items()})
        if env_block.docker is not None:
            base_image = env_block.docker.base_image
            registry = env_block.docker.base_image_registry
    env = {**conda.variables, **env}
    warnings.extend(conda.warnings)

    credentials = None
    if registry is not None and (registry.address or registry.username):
        credentials = RegistryCredentials(registry.address, registry.username, registry.password)

    return InferenceConfig(
        path=path,
        entry_script=entry_script,
        source_directory=source_dir,
        runtime="python",
        conda_file=conda_path,
        requirements=conda.requirements,
        python_version=conda.python,
        env=env,
        extra_dockerfile_steps=resolve("extraDockerfileSteps", steps)
        if steps and env_block is None
        else None,
        schema_file=resolve("schemaFile", raw.schema_file) if raw.schema_file else None,
        dependencies=tuple(resolve("dependencies", d, folder_ok=True) for d in raw.dependencies or ()),
        base_image=base_image,
        base_image_registry=credentials,
        description=raw.description,
        environment_name=environment_name,
        warnings=tuple(warnings),
    )


def _from_environment(
    env: _Environment, path: Path, resolve: Any, target_python: str
) -> tuple[CondaEnvironment, Path | None, list[str]]:
    """The pip requirements of an inline Azure ML ``environment`` block."""
    warnings: list[str] = []
    label = f"{path.name}: environment"
    for key, value in (("spark", env.spark), ("databricks", env.databricks), ("r", env.r)):
        if value:
            warnings.append(f"{label}.{key} ignored: edgeship runs Python entry scripts only")
    if env.docker is not None:
        if env.docker.base_dockerfile:
            warnings.append(f"{label}.docker.baseDockerfile ignored: edgeship builds from --base-image")
        if env.docker.gpu_support:
            warnings.append(f"{label}.docker.gpuSupport ignored: edgeship modules run on CPU")
    python = env.python
    if python is None:
        return CondaEnvironment(), None, warnings
    if python.user_managed_dependencies:
        warnings.append(
            f"{label}.python.userManagedDependencies is true: edgeship installs nothing beyond its runtime; "
            "the entry script's own packages must already be in --base-image"
        )
    if python.conda_dependencies is not None:
        return parse_conda(python.conda_dependencies, target_python, source=f"{label}.python"), None, warnings
    if python.conda_dependencies_file:
        conda_path = resolve("environment.python.condaDependenciesFile", python.conda_dependencies_file)
        key = "environment.python.condaDependenciesFile"
        return read_conda_file(conda_path, target_python, key=key), conda_path, warnings
    return CondaEnvironment(), None, warnings
