"""What ``Model.deploy``, ``Webservice.update/reload/delete/run`` do, in edgeship's terms.

The v1 objects become the two files ``az ml model deploy`` read (an inference config
and a deployment config, written with absolute paths into scratch), so packaging goes
through the packager's one reader and :func:`edgeship.release.package`, the step every
release takes. A local service then runs through :class:`LocalServices` (the process
runtime: no image to build); ACI and AKS services are signed modules whose target
files are recorded and printed, since nothing of them runs here.

What ``reload``/``update`` need to package again (the models, both configs) is kept
beside the service record in ``azureml/services/<name>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.errors import EdgeshipError
from edgeship.fsutil import atomic_write_text
from edgeship.local_services import CLOUD_TARGETS, DeployRequest, LocalServices

from .v1.exceptions import UserErrorException, WebserviceException, refuse

if TYPE_CHECKING:
    from edgeship.modules.store import StoredModule

    from .v1.core.model import InferenceConfig, Model
    from .v1.core.webservice import DeploymentConfig, Webservice
    from .v1.core.workspace import Workspace

__all__ = ["IMAGE_ENV", "RUNTIME_ENV", "azure_state", "delete", "deploy", "describe", "load_record", "run",
           "service_kind", "services", "update"]

IMAGE_ENV = "EDGESHIP_AZUREML_IMAGE"  # "0": ACI/AKS modules without an image (default: when Docker answers)
RUNTIME_ENV = "EDGESHIP_AZUREML_RUNTIME"  # LocalWebservice's runtime: process (default), docker or auto
_NO_CODE = ("onnx", "tflite")


def services(workspace: Workspace) -> LocalServices:
    return LocalServices(workspace.edgeship)


def _sidecar(workspace: Workspace, name: str) -> Path:
    return services(workspace).record_path(name).parent.parent / "azureml" / "services" / f"{name}.json"


def load_record(workspace: Workspace, name: str) -> dict[str, Any]:
    try:
        return services(workspace).record(name)
    except EdgeshipError as exc:
        raise WebserviceException(f"WebserviceNotFound: {exc}") from exc


def service_kind(workspace: Workspace, name: str) -> str:
    runtime = str(load_record(workspace, name)["runtime"])
    return runtime if runtime in CLOUD_TARGETS else "local"


def azure_state(workspace: Workspace, record: dict[str, Any]) -> str:
    """Azure's words for a service's state: Healthy, Unhealthy, Transitioning, Failed (or Packaged)."""
    state, _restarts, _error = services(workspace).state(record)
    return {"running": "Healthy", "backoff": "Unhealthy", "failed": "Failed", "stopped": "Unhealthy",
            "packaged": "Packaged"}.get(state, "Transitioning" if state in ("installed", "starting") else state)


def describe(record: dict[str, Any]) -> str:
    if record["runtime"] in CLOUD_TARGETS:
        return (f"{str(record['runtime']).upper()} service {record['name']}: module {record['module']} is signed "
                f"and its target files are in {record['artifacts']}; nothing runs here.")
    return f"Local service {record['name']} runs {record['module']} and is healthy at {record['uris']['scoring']}"


def _check_models(models: Sequence[Model], inference_config: InferenceConfig | None) -> list[str]:
    from .v1.core.model import Model

    if not models or not all(isinstance(m, Model) for m in models):
        raise UserErrorException("Model.deploy(models=...) takes a list of registered Model objects.")
    if inference_config is None:
        others = [m.id for m in models if m.model_framework not in _NO_CODE]
        if others or len(models) != 1:
            raise refuse("Model.deploy without inference_config (no-code deployment) of "
                         f"{', '.join(others) or 'several models'}",
                         "no-code serving takes one ONNX or TFLite model; give "
                         "InferenceConfig(entry_script='score.py', environment=...)")
    return [m.id for m in models]


def deploy(workspace: Workspace, name: str, models: Sequence[Model], inference_config: InferenceConfig | None,
           deployment_config: DeploymentConfig | None, *, overwrite: bool = False) -> Webservice:
    """``Model.deploy``: package, sign and run (local) or write (ACI/AKS) service ``name``."""
    from .v1.core.webservice import AciWebservice, DeploymentConfig, Webservice

    local = services(workspace)
    try:
        local.record_path(name)
    except EdgeshipError as exc:
        raise WebserviceException(f"Model.deploy(name={name!r}): {exc}") from exc
    if deployment_config is None:
        deployment_config = AciWebservice.deploy_configuration()  # Azure's default target
    if not isinstance(deployment_config, DeploymentConfig):
        raise refuse(f"Model.deploy(deployment_config={type(deployment_config).__name__})",
                     "pass LocalWebservice, AciWebservice or AksWebservice.deploy_configuration(...)")
    refs = _check_models(models, inference_config)
    if local.exists(name) and not overwrite and deployment_config.compute_type != "local":
        raise WebserviceException(f"Service {name} already exists; pass overwrite=True or delete it first.")
    setup = {"models": refs, "inferenceConfig": inference_config.to_file() if inference_config else None,
             "baseImage": inference_config.base_image_wanted() if inference_config else None,
             "deploymentConfig": deployment_config.to_file(), "port": deployment_config.port}
    _apply(workspace, name, setup)
    return Webservice(workspace, name)


def update(workspace: Workspace, name: str, models: Sequence[Model] | None, inference_config: InferenceConfig | None,
           deployment_config: DeploymentConfig | None) -> None:
    """``update``/``reload``: package again with what changed (or, for reload, the same files as edited now)."""
    path = _sidecar(workspace, name)
    if not path.is_file():
        raise WebserviceException(f"Service {name} was not deployed by Model.deploy; redeploy it with Model.deploy "
                                  "or use 'edgeship service update'.")
    setup = json.loads(path.read_text())
    if models is not None:
        setup["models"] = _check_models(models, inference_config)
    if inference_config is not None:
        setup["inferenceConfig"] = inference_config.to_file()
        setup["baseImage"] = inference_config.base_image_wanted()
    if deployment_config is not None:
        if deployment_config.compute_type.lower() != str(setup["deploymentConfig"]["computeType"]).lower():
            raise WebserviceException(f"Service {name} is {setup['deploymentConfig']['computeType']}; update keeps "
                                      "the compute type (delete it and deploy again to change it).")
        setup["deploymentConfig"] = deployment_config.to_file()
        setup["port"] = deployment_config.port
    record = load_record(workspace, name)
    _apply(workspace, name, setup, keep_port=record.get("port"), keep_keys=tuple(record.get("keys") or ()))


def _apply(workspace: Workspace, name: str, setup: dict[str, Any], *, keep_port: int | None = None,
           keep_keys: tuple[str, ...] | None = None) -> None:
    from edgeship.packager.config import derive_module_name

    compute = str(setup["deploymentConfig"]["computeType"]).lower()
    target = "local" if compute == "local" else compute
    stored = _package(workspace, name, setup, target, derive_module_name(name, target))
    local = services(workspace)
    try:
        if target == "local":
            runtime = os.environ.get(RUNTIME_ENV, "process")
            local.deploy(DeployRequest(name=name, module=stored, runtime=runtime, port=setup.get("port") or keep_port),
                         keys=keep_keys)
        else:
            local.record_cloud(name, stored, target)
    except EdgeshipError as exc:
        raise WebserviceException(f"Deploying service {name} failed: {exc}") from exc
    path = _sidecar(workspace, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(setup, indent=2, sort_keys=True) + "\n")


def _package(workspace: Workspace, name: str, setup: dict[str, Any], target: str, module: str) -> StoredModule:
    from edgeship.registry import parse_model_ref
    from edgeship.release import PackageOptions, package

    root = workspace.edgeship.root / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f"azureml-{name}-"))
    try:
        ic = dc = None
        if setup.get("inferenceConfig"):
            ic = scratch / "inferenceconfig.json"
            ic.write_text(json.dumps(setup["inferenceConfig"], indent=2))
        if target != "local":
            dc = scratch / "deploymentconfig.json"
            dc.write_text(json.dumps(setup["deploymentConfig"], indent=2))
        image: bool | None = False
        if target != "local":
            image = False if os.environ.get(IMAGE_ENV) == "0" else None
        options = PackageOptions(inference_config=ic, deployment_config=dc, target=target, module_name=module,
                                 image=image, base_image=setup.get("baseImage"))
        print(f"Packaging and signing {', '.join(setup['models'])} as module {module} ({target})", flush=True)
        stored, warnings = package(workspace.edgeship, [parse_model_ref(m, require_version=True)
                                                        for m in setup["models"]], options)
    except EdgeshipError as exc:
        raise WebserviceException(f"Packaging service {name} failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    return stored


def run(workspace: Workspace, record: dict[str, Any], input_data: Any) -> Any:
    """``service.run``: POST to the scoring URI with the primary key; the answer parsed as JSON when it is JSON."""
    from edgeship.cli.deploy import call_service

    if record["runtime"] in CLOUD_TARGETS:
        raise refuse(f"run() on {str(record['runtime']).upper()} service {record['name']}",
                     "it runs where you deploy its target files; deploy with LocalWebservice to call it here")
    if isinstance(input_data, str):
        body = input_data.encode()
    elif isinstance(input_data, bytes | bytearray):
        body = bytes(input_data)
    else:
        raise UserErrorException("run(input_data) takes a JSON string or bytes (json.dumps your data).")
    try:
        status, reply = call_service(record, body)
    except EdgeshipError as exc:
        raise WebserviceException(str(exc)) from exc
    if status >= 400:
        raise WebserviceException(f"Received bad response from service {record['name']}: HTTP {status}, "
                                  f"{reply.decode(errors='replace')[:500]}")
    try:
        return json.loads(reply)
    except ValueError:
        return reply.decode(errors="replace")


def delete(workspace: Workspace, name: str) -> None:
    try:
        services(workspace).delete(name)
    except EdgeshipError as exc:
        raise WebserviceException(f"WebserviceNotFound: {exc}") from exc
    _sidecar(workspace, name).unlink(missing_ok=True)
