"""``azureml.core.model``: ``Model`` (the registry) and ``InferenceConfig`` (what to run).

``Model.deploy`` hands everything to :mod:`edgeship.azureml.deploying`, which writes
the inference and deployment configs Azure's CLI would have read and packages, signs
and runs them through the same code as ``edgeship model deploy``.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.errors import EdgeshipError
from edgeship.registry import Model as RegistryModel

from ..exceptions import ModelNotFoundException, UserErrorException, WebserviceException, refuse
from .environment import Environment

if TYPE_CHECKING:
    from .webservice import Webservice
    from .workspace import Workspace

__all__ = ["InferenceConfig", "Model"]


class _Framework:
    """``Model.Framework``: Azure's names, mapped to edgeship's frameworks when it has one."""

    SCIKITLEARN = "ScikitLearn"
    ONNX = "Onnx"
    TFLITE = "TfLite"
    CUSTOM = "Custom"
    TENSORFLOW = "TensorFlow"
    PYTORCH = "PyTorch"
    MULTI = "Multi"


_FRAMEWORKS = {"scikitlearn": "sklearn", "onnx": "onnx", "tflite": "tflite"}


class Model:
    """A registered model version."""

    Framework = _Framework

    def __init__(self, workspace: Workspace, name: str | None = None, id: str | None = None,
                 tags: object = None, properties: object = None, version: int | None = None,
                 run_id: str | None = None, model_framework: str | None = None, expand: bool = True,
                 **_ignored: object) -> None:
        del tags, properties, run_id, model_framework, expand  # filters Azure applies server-side; name picks here
        if id is not None:
            name, _, text = id.partition(":")
            version = int(text) if text.isdigit() else version
        if not name:
            raise UserErrorException("Model(ws, name=...) needs a name or an id 'name:version'.")
        self.workspace = workspace
        try:
            self._model = RegistryModel.get(workspace.edgeship, name, version)
        except EdgeshipError as exc:
            raise ModelNotFoundException(str(exc)) from exc

    @classmethod
    def _wrap(cls, workspace: Workspace, model: RegistryModel) -> Model:
        self = cls.__new__(cls)
        self.workspace = workspace
        self._model = model
        return self

    # -- what a script reads -----------------------------------------------------
    @property
    def name(self) -> str:
        return self._model.name

    @property
    def version(self) -> int:
        return self._model.version

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def tags(self) -> dict[str, str]:
        return self._model.tags

    @property
    def properties(self) -> dict[str, str]:
        return self._model.properties

    @property
    def description(self) -> str:
        return self._model.description

    @property
    def model_framework(self) -> str:
        return self._model.model_framework

    @property
    def registry_model(self) -> RegistryModel:
        return self._model

    def serialize(self) -> dict[str, Any]:
        return {"id": self.id, **self._model.serialize()}

    def __repr__(self) -> str:
        return f"Model(workspace={self.workspace.name!r}, name={self.name!r}, id={self.id!r}, version={self.version})"

    # -- registry ------------------------------------------------------------------
    @staticmethod
    def register(workspace: Workspace, model_path: str | os.PathLike[str], model_name: str,
                 tags: dict[str, Any] | None = None, properties: dict[str, Any] | None = None,
                 description: str | None = None, datasets: object = None, model_framework: str | None = None,
                 model_framework_version: str | None = None, child_paths: object = None,
                 sample_input_dataset: object = None, sample_output_dataset: object = None,
                 resource_configuration: Any = None, **_ignored: object) -> Model:
        for what, value in (("datasets", datasets), ("sample_input_dataset", sample_input_dataset),
                            ("sample_output_dataset", sample_output_dataset), ("child_paths", child_paths)):
            if value:
                raise refuse(f"Model.register({what}=...)", f"leave {what} out; register the model's files only")
        props = {str(k): str(v) for k, v in (properties or {}).items()}
        if model_framework_version:
            props["modelFrameworkVersion"] = str(model_framework_version)
        if resource_configuration is not None:
            props.update({f"resource.{k}": str(v) for k, v in resource_configuration.serialize().items() if v})
        framework = _FRAMEWORKS.get((model_framework or "").lower(), "custom" if model_framework else None)
        try:
            model = RegistryModel.register(workspace.edgeship, model_path, model_name,
                                           tags={str(k): str(v) for k, v in (tags or {}).items()},
                                           properties=props, description=description, model_framework=framework)
        except EdgeshipError as exc:
            raise UserErrorException(str(exc)) from exc
        print(f"Registering model {model.name}")
        return Model._wrap(workspace, model)

    @staticmethod
    def list(workspace: Workspace, name: str | None = None, tags: Sequence[Any] | None = None,
             properties: object = None, latest: bool = False, **_ignored: object) -> builtins.list[Model]:
        wanted: dict[str, str] = {}
        for tag in tags or []:  # Azure: [[key, value]] or [key]
            if isinstance(tag, list | tuple) and len(tag) == 2:
                wanted[str(tag[0])] = str(tag[1])
        models = RegistryModel.list(workspace.edgeship, name=name, tags=wanted or None, latest=latest)
        keys = [str(t) for t in tags or [] if isinstance(t, str)]
        return [Model._wrap(workspace, m) for m in models if all(k in m.tags for k in keys)]

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Workspace | None = None) -> str:
        """With a workspace: a verified local copy (as Azure downloaded one); in a service: the deployed model."""
        if _workspace is None:
            from edgeship.scoring._shims.azureml.core.model import Model as ServiceModel

            return ServiceModel.get_model_path(model_name, version)
        try:
            return str(RegistryModel.get(_workspace.edgeship, model_name, version).materialize())
        except EdgeshipError as exc:
            raise ModelNotFoundException(str(exc)) from exc

    def download(self, target_dir: str = ".", exist_ok: bool = False, exists_ok: bool | None = None) -> str:
        try:
            return self._model.download(target_dir, exist_ok=bool(exist_ok or exists_ok))
        except EdgeshipError as exc:
            raise UserErrorException(str(exc)) from exc

    def delete(self) -> None:
        try:
            self._model.delete()
        except EdgeshipError as exc:
            raise WebserviceException(str(exc)) from exc

    # -- deployment ------------------------------------------------------------------
    @staticmethod
    def deploy(workspace: Workspace, name: str, models: builtins.list[Model],
               inference_config: InferenceConfig | None = None, deployment_config: Any = None,
               deployment_target: Any = None, overwrite: bool = False, show_output: bool = False) -> Webservice:
        from edgeship.azureml.deploying import deploy

        return deploy(workspace, name, models, inference_config, deployment_config, overwrite=overwrite)

    @staticmethod
    def package(*args: object, **kwargs: object) -> None:
        raise refuse("Model.package", "run 'edgeship package -m NAME:VERSION --ic inferenceconfig.json -o DIR', "
                     "which writes a signed module with its image")

    @staticmethod
    def profile(workspace: Workspace, profile_name: str, models: builtins.list[Model],
                inference_config: InferenceConfig | None = None, input_dataset: Any = None, cpu: float | None = None,
                memory_in_gb: float | None = None, description: str | None = None) -> Any:
        """Serve the models on this machine under load and recommend cpu/memoryInGB (``edgeship model profile``)."""
        from edgeship.azureml.profiling import profile

        return profile(workspace, profile_name, models, inference_config, input_dataset, cpu, memory_in_gb)


class InferenceConfig:
    """The entry script, its folder and its environment; paths are checked now, as Azure did."""

    def __init__(self, entry_script: str | os.PathLike[str] | None = None, runtime: str | None = None,
                 conda_file: str | os.PathLike[str] | None = None, extra_docker_file_steps: str | None = None,
                 source_directory: str | os.PathLike[str] | None = None, enable_gpu: bool | None = None,
                 description: str | None = None, base_image: str | None = None, base_image_registry: object = None,
                 cuda_version: str | None = None, environment: Environment | None = None) -> None:
        if entry_script is None:
            raise UserErrorException("InferenceConfig needs entry_script= (the score.py with init() and run()).")
        if environment is not None and not isinstance(environment, Environment):
            raise UserErrorException("InferenceConfig(environment=...) takes an azureml.core.Environment.")
        if environment is not None and (runtime or conda_file):
            raise UserErrorException("InferenceConfig takes environment= or the older runtime=/conda_file=, not both.")
        if base_image_registry is not None:
            raise refuse("InferenceConfig(base_image_registry=...)",
                         "pull the base image yourself and pass base_image= with its local name")
        self.source_directory = str(Path(source_directory).resolve()) if source_directory else None
        root = Path(self.source_directory) if self.source_directory else Path.cwd()
        script = root / entry_script
        if not script.is_file():
            raise UserErrorException(f"entry_script {entry_script} not found at {script}"
                                     + (" (it is relative to source_directory)" if source_directory else "") + ".")
        self.entry_script = str(entry_script) if source_directory else str(script.resolve())
        self.conda_file: str | None = None
        if conda_file is not None:
            conda = root / conda_file
            if not conda.is_file():
                raise UserErrorException(f"conda_file {conda_file} not found at {conda}.")
            self.conda_file = str(conda.resolve())
        self.runtime = runtime
        self.environment = environment
        self.description = description
        self.base_image = base_image
        self.enable_gpu = enable_gpu
        self.cuda_version = cuda_version
        self.extra_docker_file_steps = (
            str((root / extra_docker_file_steps).resolve()) if extra_docker_file_steps else None)

    def to_file(self) -> dict[str, Any]:
        """This config as an Azure ``inferenceconfig.json`` with absolute paths (what the packager reads)."""
        data: dict[str, Any] = {"entryScript": self.entry_script}
        if self.source_directory:
            data["sourceDirectory"] = self.source_directory
        if self.environment is not None:
            data["environment"] = self.environment.to_inference_environment()
        else:
            data["runtime"] = self.runtime or "python"
            if self.conda_file:
                data["condaFile"] = self.conda_file
            if self.base_image:
                data["baseImage"] = self.base_image
            if self.enable_gpu is not None:
                data["enableGpu"] = self.enable_gpu
            if self.cuda_version is not None:
                data["cudaVersion"] = self.cuda_version
            if self.extra_docker_file_steps:
                data["extraDockerfileSteps"] = self.extra_docker_file_steps
        if self.description:
            data["description"] = self.description
        return data

    def base_image_wanted(self) -> str | None:
        if self.environment is not None:
            return self.environment.docker.base_image
        return self.base_image
