"""Azure Container Instances: a container-group YAML for ``az container create --file``.

Why this shape: it is the YAML form of the ``Microsoft.ContainerInstance/
containerGroups`` ARM resource (API 2021-10-01), which ``az container create
--resource-group RG --file aci.yaml`` accepts as is. ACI has no port mapping,
so the public IP exposes the container's own port. Auth keys go into
``secureValue`` environment variables, which ACI never shows back in
``az container show``; probes use the scoring server's health paths.
"""

from __future__ import annotations

from typing import Any

from .spec import READINESS, Probe, TargetSpec

__all__ = ["ACI_API_VERSION", "aci_container_group"]

ACI_API_VERSION = "2021-10-01"
# ACI requires a request; when the spec has none, use az container create's own defaults.
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_GB = 1.5


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 2)


def aci_container_group(spec: TargetSpec, *, location: str | None = None) -> dict[str, Any]:
    """The container-group document (a plain dict; YAML-dump it for ``--file``).

    ``location`` is optional: without it ``az`` uses the resource group's region.
    """
    res = spec.resources
    requests: dict[str, float | int] = {
        "cpu": _round(res.cpu if res.cpu is not None else DEFAULT_CPU),
        "memoryInGB": _round(res.memory_gb if res.memory_gb is not None else DEFAULT_MEMORY_GB),
    }
    container: dict[str, Any] = {
        "image": spec.image,
        "ports": [{"port": spec.port, "protocol": "TCP"}],
        "resources": {"requests": requests},
        "environmentVariables": [
            *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
            *({"name": k, "secureValue": v} for k, v in sorted(spec.key_env.items())),
        ],
        "livenessProbe": _probe(spec.port, spec.liveness_path, spec.liveness),
        "readinessProbe": _probe(spec.port, spec.readiness_path, READINESS),
    }
    if res.cpu_limit is not None or res.memory_gb_limit is not None:
        container["resources"]["limits"] = {
            "cpu": _round(res.cpu_limit if res.cpu_limit is not None else requests["cpu"]),
            "memoryInGB": _round(
                res.memory_gb_limit if res.memory_gb_limit is not None else requests["memoryInGB"]
            ),
        }
    ip_address: dict[str, Any] = {"type": "Public", "ports": [{"port": spec.port, "protocol": "TCP"}]}
    if spec.dns_name_label:
        ip_address["dnsNameLabel"] = spec.dns_name_label
    doc: dict[str, Any] = {
        "apiVersion": ACI_API_VERSION,
        "type": "Microsoft.ContainerInstance/containerGroups",
        "name": spec.name,
    }
    if location:
        doc["location"] = location
    doc["tags"] = {k.replace("/", "_"): v for k, v in sorted(spec.all_labels().items())}
    doc["properties"] = {
        "containers": [{"name": spec.name, "properties": container}],
        "osType": "Linux",
        "restartPolicy": "Always",
        "ipAddress": ip_address,
    }
    return doc


def _probe(port: int, path: str, timing: Probe) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "http"},
        "initialDelaySeconds": timing.initial_delay_seconds,
        "periodSeconds": timing.period_seconds,
        "failureThreshold": timing.failure_threshold,
        "successThreshold": timing.success_threshold,
        "timeoutSeconds": timing.timeout_seconds,
    }
