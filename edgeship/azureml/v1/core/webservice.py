"""``azureml.core.webservice``: deployment configurations and the services ``Model.deploy`` returns.

A deployment configuration is kept as the ``deploymentconfig.json`` keys azure-cli-ml
reads (``containerResourceRequirements.cpu``, ``authEnabled``...), so it goes through
the packager's one reader with its checks and warnings. ``LocalWebservice`` runs on this
machine (:class:`edgeship.local_services.LocalServices`); ``AciWebservice`` and
``AksWebservice`` are signed modules with their target files, written, not run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from edgeship.errors import EdgeshipError

from ..exceptions import WebserviceException, refuse

if TYPE_CHECKING:
    from .model import InferenceConfig, Model
    from .workspace import Workspace

__all__ = ["AciWebservice", "AksWebservice", "DeploymentConfig", "LocalWebservice", "Webservice"]


class DeploymentConfig:
    """A deployment configuration: the compute type and the file keys it sets."""

    def __init__(self, compute_type: str, keys: dict[str, Any], port: int | None = None) -> None:
        self.compute_type = compute_type
        self.keys = keys
        self.port = port

    def to_file(self) -> dict[str, Any]:
        return {"computeType": self.compute_type, **self.keys}

    def __repr__(self) -> str:
        return f"DeploymentConfig({json.dumps(self.to_file(), sort_keys=True)})"


# python parameter -> key path in deploymentconfig.json (azure-cli-ml's names)
_ACI_KEYS = {
    "cpu_cores": "containerResourceRequirements.cpu", "memory_gb": "containerResourceRequirements.memoryInGB",
    "gpu_cores": "containerResourceRequirements.gpu", "auth_enabled": "authEnabled", "ssl_enabled": "sslEnabled",
    "enable_app_insights": "appInsightsEnabled", "ssl_cert_pem_file": "sslCertificate",
    "ssl_key_pem_file": "sslKey", "ssl_cname": "cname", "dns_name_label": "dnsNameLabel",
    "primary_key": "keys.primaryKey", "secondary_key": "keys.secondaryKey", "location": "location",
    "collect_model_data": "dataCollection.storageEnabled", "cmk_vault_base_url": "vaultBaseUrl",
    "cmk_key_name": "keyName", "cmk_key_version": "keyVersion", "vnet_name": "vnetName",
    "subnet_name": "subnetName",
}
_AKS_KEYS = {
    "autoscale_enabled": "autoScaler.autoscaleEnabled", "autoscale_min_replicas": "autoScaler.minReplicas",
    "autoscale_max_replicas": "autoScaler.maxReplicas",
    "autoscale_refresh_seconds": "autoScaler.refreshPeriodInSeconds",
    "autoscale_target_utilization": "autoScaler.targetUtilization",
    "collect_model_data": "dataCollection.storageEnabled", "auth_enabled": "authEnabled",
    "cpu_cores": "containerResourceRequirements.cpu", "memory_gb": "containerResourceRequirements.memoryInGB",
    "cpu_cores_limit": "containerResourceRequirements.cpuLimit",
    "memory_gb_limit": "containerResourceRequirements.memoryInGBLimit",
    "gpu_cores": "containerResourceRequirements.gpu", "enable_app_insights": "appInsightsEnabled",
    "scoring_timeout_ms": "scoringTimeoutMs", "replica_max_concurrent_requests": "maxConcurrentRequestsPerContainer",
    "max_request_wait_time": "maxQueueWaitMs", "num_replicas": "numReplicas", "primary_key": "keys.primaryKey",
    "secondary_key": "keys.secondaryKey", "period_seconds": "livenessProbeRequirements.periodSeconds",
    "initial_delay_seconds": "livenessProbeRequirements.initialDelaySeconds",
    "timeout_seconds": "livenessProbeRequirements.timeoutSeconds",
    "success_threshold": "livenessProbeRequirements.successThreshold",
    "failure_threshold": "livenessProbeRequirements.failureThreshold", "namespace": "namespace",
    "token_auth_enabled": "tokenAuthEnabled", "compute_target_name": "computeTargetName",
}
_KEPT = ("tags", "properties", "description")  # metadata Azure keeps on the service; nothing to deploy


def _config(compute_type: str, table: dict[str, str], call: str, kwargs: dict[str, Any]) -> DeploymentConfig:
    keys: dict[str, Any] = {}
    for param, value in kwargs.items():
        if param in _KEPT or value is None:
            continue
        path = table.get(param)
        if path is None:
            raise TypeError(f"{call}() got an unexpected keyword argument '{param}'")
        if param in ("ssl_cert_pem_file", "ssl_key_pem_file"):
            value = str(value)
        node = keys
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return DeploymentConfig(compute_type, keys)


class Webservice:
    """A deployed service; ``Webservice(ws, name)`` finds one (WebserviceException when there is none)."""

    compute_type = "Unknown"

    def __new__(cls, workspace: Workspace, name: str, *args: object, **kwargs: object) -> Webservice:
        from edgeship.azureml.deploying import service_kind

        kind = service_kind(workspace, name)  # WebserviceException when there is no such service
        chosen = {"local": LocalWebservice, "aci": AciWebservice, "aks": AksWebservice}[kind]
        if cls is not Webservice and cls is not chosen:
            raise WebserviceException(
                f"WebserviceNotFound: service {name} is a {chosen.__name__}, not a {cls.__name__}.")
        return object.__new__(chosen)

    def __init__(self, workspace: Workspace, name: str, *args: object, **kwargs: object) -> None:
        from edgeship.azureml.deploying import load_record

        self.workspace = workspace
        self.name = name
        self._record = load_record(workspace, name)

    # -- what a script reads -----------------------------------------------------
    @property
    def state(self) -> str:
        from edgeship.azureml.deploying import azure_state

        return azure_state(self.workspace, self._record)

    @property
    def port(self) -> int | None:
        port = self._record.get("port")
        return int(port) if port is not None else None

    @property
    def scoring_uri(self) -> str | None:
        return (self._record.get("uris") or {}).get("scoring")

    @property
    def swagger_uri(self) -> str | None:
        return (self._record.get("uris") or {}).get("swagger")

    @property
    def auth_enabled(self) -> bool:
        return bool(self._record.get("keys"))

    @property
    def artifacts(self) -> str | None:
        """Where the signed module's target files are (ACI/AKS)."""
        return self._record.get("artifacts")

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: int | None = None) -> None:
        """Deployment finished inside ``Model.deploy`` (it raised if it failed); this reports the outcome."""
        if show_output:
            from edgeship.azureml.deploying import describe

            print(describe(self._record))

    def run(self, input_data: Any) -> Any:
        from edgeship.azureml.deploying import run

        return run(self.workspace, self._record, input_data)

    def get_logs(self, num_lines: int = 5000, init: bool = False) -> str:
        from edgeship.azureml.deploying import services

        try:
            return services(self.workspace).logs(self.name, max(1, min(int(num_lines), 100_000)))
        except EdgeshipError as exc:
            raise WebserviceException(str(exc)) from exc

    def get_keys(self) -> tuple[str, str]:
        keys = list(self._record.get("keys") or [])
        if not keys:
            raise WebserviceException(f"Service {self.name} has no keys: auth is not enabled for it.")
        return keys[0], keys[-1]

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        from edgeship.azureml.deploying import load_record, services

        if set_key is not None:
            raise refuse("regen_key(set_key=...)", "let edgeship make the key (leave set_key out)")
        try:
            services(self.workspace).regenerate_key(self.name, key)
        except EdgeshipError as exc:
            raise WebserviceException(str(exc)) from exc
        self._record = load_record(self.workspace, self.name)

    def get_token(self) -> None:
        raise refuse("get_token", "use key auth (auth_enabled=True) and get_keys()")

    def update(self, models: list[Model] | None = None, inference_config: InferenceConfig | None = None,
               deployment_config: Any = None, **kwargs: Any) -> None:
        from edgeship.azureml.deploying import update

        if kwargs:
            raise refuse(f"Webservice.update({', '.join(sorted(kwargs))}=...)",
                         "pass models=, inference_config= or deployment_config=; tags and other settings stay")
        update(self.workspace, self.name, models, inference_config, deployment_config)
        self.reload_record()

    def reload(self, wait: bool = False) -> None:
        """Package the entry script and its folder again (edited files) and restart the service with them."""
        from edgeship.azureml.deploying import update

        update(self.workspace, self.name, None, None, None)
        self.reload_record()

    def reload_record(self) -> None:
        from edgeship.azureml.deploying import load_record

        self._record = load_record(self.workspace, self.name)

    def delete(self) -> None:
        from edgeship.azureml.deploying import delete

        delete(self.workspace, self.name)

    def serialize(self) -> dict[str, Any]:
        return {"name": self.name, "computeType": self.compute_type, "state": self.state,
                "scoringUri": self.scoring_uri, "module": self._record.get("module")}

    @staticmethod
    def list(workspace: Workspace, compute_type: str | None = None, image_name: str | None = None,
             image_id: str | None = None, model_name: str | None = None, model_id: str | None = None,
             tags: object = None, properties: object = None, **_ignored: object) -> list[Webservice]:
        from edgeship.azureml.deploying import services

        found: list[Webservice] = []
        for record in services(workspace).records():
            service = Webservice(workspace, str(record["name"]))
            if compute_type and service.compute_type.lower() != compute_type.lower():
                continue
            module = str(record.get("module", ""))
            if model_name and not module.startswith(f"{model_name}:"):
                continue
            found.append(service)
        return found

    @staticmethod
    def deploy_from_model(*args: object, **kwargs: object) -> None:
        raise refuse("Webservice.deploy_from_model", "call Model.deploy(ws, name, models, inference_config, "
                     "deployment_config)")

    @staticmethod
    def deploy_from_image(*args: object, **kwargs: object) -> None:
        raise refuse("Webservice.deploy_from_image", "call Model.deploy(ws, name, models, inference_config, "
                     "deployment_config); edgeship builds the image from a signed module")

    deploy = deploy_from_model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workspace={self.workspace.name!r}, name={self.name!r}, state={self.state!r})"


class LocalWebservice(Webservice):
    compute_type = "Local"

    @staticmethod
    def deploy_configuration(port: int | None = None) -> DeploymentConfig:
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise WebserviceException(f"LocalWebservice.deploy_configuration(port={port!r}): give a TCP port "
                                      "between 1 and 65535, or leave it out for a free one.")
        return DeploymentConfig("local", {}, port=port)


class AciWebservice(Webservice):
    compute_type = "ACI"

    @staticmethod
    def deploy_configuration(**kwargs: Any) -> DeploymentConfig:
        return _config("ACI", _ACI_KEYS, "AciWebservice.deploy_configuration", kwargs)


class AksWebservice(Webservice):
    compute_type = "AKS"

    @staticmethod
    def deploy_configuration(**kwargs: Any) -> DeploymentConfig:
        return _config("AKS", _AKS_KEYS, "AksWebservice.deploy_configuration", kwargs)
