"""The policy over a parsed deployment config: what contradicts, and what is only warned about.

Why a module of its own: this is the part reviewers argue about, so it is kept
apart from parsing and readable as two lists. A contradiction is a ConfigError
naming every key involved; an Azure-only feature that edgeship cannot provide
is one warning line and the deployment continues. ``tokenAuthEnabled`` is the
exception: silently serving an unauthenticated endpoint to someone who asked
for authentication is unsafe, so it is an error that points at ``authEnabled``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.errors import ConfigError

if TYPE_CHECKING:
    from .deployment import DeploymentFile

__all__ = ["check_contradictions", "collect_warnings"]


def _differ(a: object, b: object) -> bool:
    return a is not None and b is not None and a != b


def check_contradictions(raw: DeploymentFile, path: Path, compute: str) -> None:
    """Raise ConfigError for values that cannot all hold at once."""

    def fail(message: str) -> None:
        raise ConfigError(f"{path}: {message}")

    keys = raw.keys
    if keys is not None and _differ(keys.primary_key, raw.primary_key):
        fail("'keys.primaryKey' and 'primaryKey' disagree; keep one of them")
    if keys is not None and _differ(keys.secondary_key, raw.secondary_key):
        fail("'keys.secondaryKey' and 'secondaryKey' disagree; keep one of them")
    if _differ(raw.cname, raw.ssl_cname):
        fail("'cname' and 'sslCname' disagree; keep one of them")
    if raw.auth_enabled and raw.token_auth_enabled:
        fail("'authEnabled' and 'tokenAuthEnabled' cannot both be true (Azure ML's rule too); choose one")
    if raw.token_auth_enabled:
        fail(
            "'tokenAuthEnabled' needs Azure AD tokens, which edgeship cannot issue; "
            "use 'authEnabled': true for key authentication instead"
        )

    res = raw.container_resource_requirements
    if res is not None:
        if _differ(res.cpu_limit, res.cpu_limit_snake):
            fail(
                "'containerResourceRequirements.cpuLimit' and 'containerResourceRequirements.cpu_limit' "
                "disagree; keep one"
            )
        limit = res.cpu_limit if res.cpu_limit is not None else res.cpu_limit_snake
        if limit is not None and res.cpu is not None and limit < res.cpu:
            fail(
                f"'containerResourceRequirements.cpuLimit' ({limit}) is below "
                f"'containerResourceRequirements.cpu' ({res.cpu}); a limit must be at least the request"
            )
        if (
            res.memory_in_gb_limit is not None
            and res.memory_in_gb is not None
            and (res.memory_in_gb_limit < res.memory_in_gb)
        ):
            fail(
                f"'containerResourceRequirements.memoryInGBLimit' ({res.memory_in_gb_limit}) is below "
                f"'containerResourceRequirements.memoryInGB' ({res.memory_in_gb}); a limit must be at least "
                "the request"
            )

    scaler = raw.auto_scaler
    if scaler is not None:
        if scaler.autoscale_enabled and raw.num_replicas is not None:
            fail(
                "'autoScaler.autoscaleEnabled' is true and 'numReplicas' is set; Azure ML allows one or the "
                "other: drop numReplicas to autoscale, or set autoscaleEnabled to false"
            )
        if (
            scaler.min_replicas is not None
            and scaler.max_replicas is not None
            and (scaler.min_replicas > scaler.max_replicas)
        ):
            fail(
                f"'autoScaler.minReplicas' ({scaler.min_replicas}) is above 'autoScaler.maxReplicas' "
                f"({scaler.max_replicas})"
            )
        if scaler.target_utilization is not None and not 1 <= scaler.target_utilization <= 100:
            fail(
                f"'autoScaler.targetUtilization' ({scaler.target_utilization}) must be a percentage, 1 to 100"
            )
        if compute == "aks" and scaler.autoscale_enabled is not False and scaler.min_replicas == 0:
            fail("'autoScaler.minReplicas' is 0; a Kubernetes HorizontalPodAutoscaler needs at least 1")
        if compute == "aci" and scaler.autoscale_enabled is not False:
            fail(
                "'autoScaler' is set but computeType is ACI, which runs a single container group and "
                "cannot autoscale; remove autoScaler or use computeType AKS"
            )
    if compute == "aci" and raw.num_replicas is not None and raw.num_replicas > 1:
        fail("'numReplicas' is above 1 but computeType is ACI, which runs one container group; use AKS")

    if raw.ssl_enabled:
        missing = [k for k, v in (("sslCertificate", raw.ssl_certificate), ("sslKey", raw.ssl_key)) if not v]
        if missing:
            fail(
                f"'sslEnabled' is true but {' and '.join(repr(m) for m in missing)} not set; "
                "give both PEM files"
            )
    for key, value in (("sslCertificate", raw.ssl_certificate), ("sslKey", raw.ssl_key)):
        if value and not (path.parent / value).is_file():
            fail(f"{key} '{value}' not found at {(path.parent / value).resolve()}")


def collect_warnings(raw: DeploymentFile, name: str, compute: str) -> list[str]:
    """One line per key that Azure defines and edgeship cannot honour for ``compute``."""
    out: list[str] = []

    def warn(key: str, why: str) -> None:
        out.append(f"{name}: {key} ignored: {why}")

    azure_only = "an Azure resource setting with no edgeship counterpart"
    if raw.app_insights_enabled:
        warn(
            "appInsightsEnabled",
            "edgeship exposes Prometheus metrics at /metrics instead of Application Insights",
        )
    if raw.data_collection is not None and raw.data_collection.storage_enabled:
        warn("dataCollection.storageEnabled", "edgeship does not collect model inputs to Azure Blob storage")
    if raw.ssl_enabled:
        warn("sslEnabled", "edgeship targets serve plain HTTP; terminate TLS in an ingress or reverse proxy")
    for key, value in (
        ("cname", raw.cname),
        ("sslCname", raw.ssl_cname),
        ("location", raw.location),
        ("vnetName", raw.vnet_name),
        ("subnetName", raw.subnet_name),
        ("computeTarget", raw.compute_target),
        ("computeTargetName", raw.compute_target_name),
    ):
        if value:
            warn(key, azure_only)
    cmk = [
        k
        for k, v in (
            ("vaultBaseUrl", raw.vault_base_url),
            ("keyName", raw.key_name),
            ("keyVersion", raw.key_version),
            ("cmkVaultBaseUrl", raw.cmk_vault_base_url),
            ("cmkKeyName", raw.cmk_key_name),
            ("cmkKeyVersion", raw.cmk_key_version),
        )
        if v
    ]
    if cmk:
        warn(", ".join(cmk), "customer-managed encryption keys are an Azure Container Instances feature")
    res = raw.container_resource_requirements
    if (raw.gpu_cores or (res is not None and res.gpu)) and compute != "fpga":
        warn("gpuCores/containerResourceRequirements.gpu", "edgeship modules run on CPU")
    if res is not None and res.fpga and compute != "fpga":
        warn("containerResourceRequirements.fpga", "use computeType fpga for FPGA variants")
    endpoint = [
        k
        for k, v in (
            ("versionName", raw.version_name),
            ("trafficPercentile", raw.traffic_percentile),
            ("isDefault", raw.is_default),
            ("isControlVersion", raw.is_control_version),
        )
        if v is not None
    ]
    if endpoint:
        warn(
            ", ".join(endpoint), "AKS endpoint traffic splitting is not generated; one Deployment is written"
        )

    scaler = raw.auto_scaler
    if compute == "aks" and scaler is not None and scaler.refresh_period_in_seconds not in (None, 1):
        warn(
            "autoScaler.refreshPeriodInSeconds",
            "a HorizontalPodAutoscaler's sync period is a cluster-wide controller setting",
        )
    if compute in ("local", "iotedge", "fpga"):
        if scaler is not None and scaler.autoscale_enabled:
            warn("autoScaler", f"a {compute} module runs one instance per device")
        if raw.num_replicas is not None and raw.num_replicas > 1:
            warn("numReplicas", f"a {compute} module runs one instance per device")
    if raw.dns_name_label and compute != "aci":
        warn("dnsNameLabel", "it applies to computeType ACI only")
    if raw.namespace and compute != "aks":
        warn("namespace", "it applies to computeType AKS only")
    if raw.port is not None and compute not in ("local", "iotedge"):
        warn("port", "it applies to local and iotedge targets; cloud targets expose the scoring port")
    if raw.liveness_probe_requirements is not None and compute not in ("aci", "aks"):
        warn("livenessProbeRequirements", "the edgeship agent health-checks local and device modules itself")
    auth = raw.auth_enabled if raw.auth_enabled is not None else compute == "aks"
    has_keys = (raw.keys is not None and (raw.keys.primary_key or raw.keys.secondary_key)) or (
        raw.primary_key or raw.secondary_key
    )
    if has_keys and not auth:
        warn("keys", "authEnabled is not true for this computeType")
    return out
