"""Azure ML v1 ``deploymentconfig.json`` (or .yml), read as ``az ml model deploy --dc`` reads it.

Why: the key set is azure-cli-ml's own (``deploy_config_dict_to_obj``):
``containerResourceRequirements.cpuLimit``, ``keys.primaryKey``, ``cname``,
``vaultBaseUrl``... plus a few spellings that circulate in Azure's docs and
samples (``cpu_limit``, ``sslCname``, top-level ``primaryKey``). Each key is
either honoured, warned about in one line (Azure-only features such as
Application Insights or VNets), or, when unknown, an error with the closest
key. Values that contradict each other are errors that name both keys,
because deploying "something close" is worse than not deploying.

Defaults follow Azure ML's: ACI and AKS get 0.1 CPU and 0.5 GB when unset;
AKS has key auth on and an autoscaler (1..10 replicas, 70 %) unless
``numReplicas`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from edgeship.errors import ConfigError

from ._loading import AzureModel, read_mapping, validate_model
from .rules import check_contradictions, collect_warnings

__all__ = ["COMPUTE_TYPES", "Autoscaler", "DeploymentConfig", "LivenessProbe", "load_deployment_config"]

COMPUTE_TYPES = ("local", "aci", "aks", "iotedge", "fpga")

# computeType values (lower-cased) -> edgeship target.
_ALIASES = {
    "local": "local",
    "aci": "aci",
    "aks": "aks",
    "aksendpoint": "aks",
    "iot": "iotedge",
    "iotedge": "iotedge",
    "edge": "iotedge",
    "fpga": "fpga",
}


class _Resources(AzureModel):
    cpu: float | None = Field(None, gt=0)
    cpu_limit: float | None = Field(None, gt=0, alias="cpuLimit")
    cpu_limit_snake: float | None = Field(None, gt=0, alias="cpu_limit")
    memory_in_gb: float | None = Field(None, gt=0, alias="memoryInGB")
    memory_in_gb_limit: float | None = Field(None, gt=0, alias="memoryInGBLimit")
    gpu: int | None = Field(None, ge=0)
    fpga: int | None = Field(None, ge=0)


class _AutoScaler(AzureModel):
    autoscale_enabled: bool | None = Field(None, alias="autoscaleEnabled")
    min_replicas: int | None = Field(None, ge=0, alias="minReplicas")
    max_replicas: int | None = Field(None, ge=1, alias="maxReplicas")
    refresh_period_in_seconds: int | None = Field(None, ge=1, alias="refreshPeriodInSeconds")
    target_utilization: int | None = Field(None, alias="targetUtilization")


class _Keys(AzureModel):
    primary_key: str | None = Field(None, alias="primaryKey")
    secondary_key: str | None = Field(None, alias="secondaryKey")


class _DataCollection(AzureModel):
    storage_enabled: bool | None = Field(None, alias="storageEnabled")


class _Liveness(AzureModel):
    period_seconds: int | None = Field(None, ge=1, alias="periodSeconds")
    initial_delay_seconds: int | None = Field(None, ge=0, alias="initialDelaySeconds")
    timeout_seconds: int | None = Field(None, ge=1, alias="timeoutSeconds")
    success_threshold: int | None = Field(None, ge=1, alias="successThreshold")
    failure_threshold: int | None = Field(None, ge=1, alias="failureThreshold")


class DeploymentFile(AzureModel):
    """Every key azure-cli-ml reads from a deployment config, by compute type."""

    compute_type: str | None = Field(None, alias="computeType")
    container_resource_requirements: _Resources | None = Field(None, alias="containerResourceRequirements")
    auth_enabled: bool | None = Field(None, alias="authEnabled")
    token_auth_enabled: bool | None = Field(None, alias="tokenAuthEnabled")
    keys: _Keys | None = None
    primary_key: str | None = Field(None, alias="primaryKey")
    secondary_key: str | None = Field(None, alias="secondaryKey")
    ssl_enabled: bool | None = Field(None, alias="sslEnabled")
    ssl_certificate: str | None = Field(None, alias="sslCertificate")
    ssl_key: str | None = Field(None, alias="sslKey")
    cname: str | None = None
    ssl_cname: str | None = Field(None, alias="sslCname")
    app_insights_enabled: bool | None = Field(None, alias="appInsightsEnabled")
    dns_name_label: str | None = Field(None, alias="dnsNameLabel")
    location: str | None = None
    vault_base_url: str | None = Field(None, alias="vaultBaseUrl")
    key_name: str | None = Field(None, alias="keyName")
    key_version: str | None = Field(None, alias="keyVersion")
    cmk_vault_base_url: str | None = Field(None, alias="cmkVaultBaseUrl")
    cmk_key_name: str | None = Field(None, alias="cmkKeyName")
    cmk_key_version: str | None = Field(None, alias="cmkKeyVersion")
    vnet_name: str | None = Field(None, alias="vnetName")
    subnet_name: str | None = Field(None, alias="subnetName")
    auto_scaler: _AutoScaler | None = Field(None, alias="autoScaler")
    data_collection: _DataCollection | None = Field(None, alias="dataCollection")
    scoring_timeout_ms: int | None = Field(None, ge=1, alias="scoringTimeoutMs")
    max_concurrent_requests_per_container: int | None = Field(
        None, ge=1, alias="maxConcurrentRequestsPerContainer"
    )
    max_queue_wait_ms: int | None = Field(None, ge=0, alias="maxQueueWaitMs")
    num_replicas: int | None = Field(None, ge=0, alias="numReplicas")
    gpu_cores: int | None = Field(None, ge=0, alias="gpuCores")
    liveness_probe_requirements: _Liveness | None = Field(None, alias="livenessProbeRequirements")
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    compute_target_name: str | None = Field(None, alias="computeTargetName")
    compute_target: str | None = Field(None, alias="computeTarget")
    version_name: str | None = Field(None, alias="versionName")
    traffic_percentile: float | None = Field(None, alias="trafficPercentile")
    is_default: bool | None = Field(None, alias="isDefault")
    is_control_version: bool | None = Field(None, alias="isControlVersion")
    port: int | None = Field(None, ge=1, le=65535)
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    description: str | None = None


@dataclass(frozen=True)
class Autoscaler:
    """Horizontal autoscaling as Azure ML's AKS autoscaler describes it."""

    min_replicas: int = 1
    max_replicas: int = 10
    target_utilization: int = 70  # percent of requested CPU
    refresh_seconds: int = 1


@dataclass(frozen=True)
class LivenessProbe:
    """``livenessProbeRequirements`` with Azure ML's defaults filled in."""

    period_seconds: int = 10
    initial_delay_seconds: int = 310
    timeout_seconds: int = 2
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class DeploymentConfig:
    """A validated deployment config, normalised and with Azure ML's defaults applied."""

    path: Path | None
    compute_type: str  # one of COMPUTE_TYPES
    cpu: float | None = None  # cores
    memory_gb: float | None = None
    cpu_limit: float | None = None
    memory_gb_limit: float | None = None
    auth_enabled: bool = False
    primary_key: str | None = None
    secondary_key: str | None = None
    autoscaler: Autoscaler | None = None
    replicas: int | None = None
    port: int | None = None
    liveness: LivenessProbe | None = None
    namespace: str | None = None
    dns_name_label: str | None = None
    scoring_timeout_ms: int | None = None
    max_concurrent_requests: int | None = None
    max_queue_wait_ms: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    warnings: tuple[str, ...] = ()


def normalise_compute_type(value: str, where: str) -> str:
    """``"ACI"`` -> ``"aci"``; ``"IOT"`` -> ``"iotedge"``; unknown -> ConfigError."""
    found = _ALIASES.get(value.strip().lower())
    if found is None:
        raise ConfigError(
            f"{where}: computeType '{value}' is not a target edgeship builds; use one of "
            f'{", ".join(COMPUTE_TYPES)} (any case, e.g. "ACI")'
        )
    return found


def load_deployment_config(path: str | Path, *, target: str | None = None) -> DeploymentConfig:
    """Read and validate an Azure ML v1 deployment config.

    ``target`` (the CLI's ``--target``) overrides ``computeType``; one of them
    must be given. Raises ConfigError naming the key; warnings are returned.
    """
    path = Path(path).resolve()
    data = read_mapping(path, "deployment config")
    ignored = _pop_compute_target(data, path.name)
    config = build_deployment_config(validate_model(DeploymentFile, data, path), path, target=target)
    return replace(config, warnings=ignored + config.warnings) if ignored else config


def _pop_compute_target(data: dict[str, Any], name: str) -> tuple[str, ...]:
    """``ComputeTarget`` (Azure's docs and azureml-cli sample spell it so) names an AKS cluster, which ``az ml``
    took from ``--compute-target`` and ignored in the file: a warning here, not an error (ADR 0033), as for
    the ``computeTarget`` spelling the file model knows."""
    found = [key for key in list(data) if key.lower() == "computetarget" and key != "computeTarget"]
    for key in found:
        data.pop(key)
    return tuple(
        f"{name}: {key} ignored (az ml took the cluster from --compute-target, not from the file; "
        "edgeship deploys by computeType)" for key in found
    )


def build_deployment_config(
    raw: DeploymentFile, path: Path, *, target: str | None = None
) -> DeploymentConfig:
    """The normalisation step of :func:`load_deployment_config`, on an already parsed file."""
    overridden: list[str] = []
    if target is not None:
        # One deploymentconfig serves several targets (the same module for ACI, AKS and IoT Edge):
        # --target wins over the file's computeType, and the user is told.
        compute = normalise_compute_type(target, "--target")
        if raw.compute_type and normalise_compute_type(raw.compute_type, str(path)) != compute:
            overridden.append(
                f"{path.name}: computeType '{raw.compute_type}' is overridden by --target {target}; "
                f"settings are checked for {compute}"
            )
    elif raw.compute_type:
        compute = normalise_compute_type(raw.compute_type, str(path))
    else:
        raise ConfigError(
            f"{path}: key 'computeType' is required (ACI, AKS, local, IOT) unless --target is given"
        )

    check_contradictions(raw, path, compute)
    warnings = overridden + list(collect_warnings(raw, path.name, compute))

    res = raw.container_resource_requirements
    cloud = compute in ("aci", "aks")
    cpu = res.cpu if res and res.cpu is not None else (0.1 if cloud else None)
    memory = res.memory_in_gb if res and res.memory_in_gb is not None else (0.5 if cloud else None)
    cpu_limit = (res.cpu_limit if res.cpu_limit is not None else res.cpu_limit_snake) if res else None

    keys = raw.keys or _Keys.model_validate({})
    primary = keys.primary_key or raw.primary_key
    secondary = keys.secondary_key or raw.secondary_key
    auth = raw.auth_enabled if raw.auth_enabled is not None else compute == "aks"

    autoscaler: Autoscaler | None = None
    replicas = raw.num_replicas
    scaler = raw.auto_scaler
    if compute == "aks":
        enabled = (
            scaler.autoscale_enabled if scaler and scaler.autoscale_enabled is not None else replicas is None
        )
        if enabled:
            s = scaler or _AutoScaler.model_validate({})
            autoscaler = Autoscaler(
                min_replicas=s.min_replicas if s.min_replicas is not None else 1,
                max_replicas=s.max_replicas if s.max_replicas is not None else 10,
                target_utilization=s.target_utilization if s.target_utilization is not None else 70,
                refresh_seconds=s.refresh_period_in_seconds or 1,
            )
            replicas = None
        elif replicas is None:
            replicas = 1

    liveness = None
    if raw.liveness_probe_requirements is not None:
        given = {k: v for k, v in raw.liveness_probe_requirements.model_dump().items() if v is not None}
        liveness = LivenessProbe(**given)

    return DeploymentConfig(
        path=path,
        compute_type=compute,
        cpu=cpu,
        memory_gb=memory,
        cpu_limit=cpu_limit,
        memory_gb_limit=res.memory_in_gb_limit if res else None,
        auth_enabled=auth,
        primary_key=primary if auth else None,
        secondary_key=secondary if auth else None,
        autoscaler=autoscaler,
        replicas=replicas,
        port=raw.port,
        liveness=liveness,
        namespace=raw.namespace,
        dns_name_label=raw.dns_name_label if compute == "aci" else None,
        scoring_timeout_ms=raw.scoring_timeout_ms,
        max_concurrent_requests=raw.max_concurrent_requests_per_container,
        max_queue_wait_ms=raw.max_queue_wait_ms,
        tags={str(k): str(v) for k, v in (raw.tags or {}).items()},
        properties={str(k): str(v) for k, v in (raw.properties or {}).items()},
        description=raw.description,
        warnings=tuple(warnings),
    )
