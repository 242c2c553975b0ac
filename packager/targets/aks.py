"""Kubernetes (AKS or any cluster): Secret, Deployment, Service and HorizontalPodAutoscaler.

Why these four: they are what Azure ML v1 created on AKS for a web service,
expressed as plain manifests a user applies with ``kubectl apply -f``. Keys live
in a Secret (``stringData``) and reach the container through ``secretKeyRef``,
so they never appear in the Deployment. With an autoscaler the Deployment
leaves ``replicas`` unset, so re-applying never fights the HPA. Quantities are
exact: CPU in millicores, memory in megabytes (Azure's GB are 10^9 bytes).
The documents target Kubernetes 1.30 APIs (apps/v1, autoscaling/v2).
"""

from __future__ import annotations

from typing import Any

from .spec import READINESS, Probe, TargetSpec

__all__ = ["KUBERNETES_VERSION", "aks_manifests", "cpu_quantity", "memory_quantity"]

KUBERNETES_VERSION = "1.30.0"  # the API level the manifests are validated against
DEFAULT_CPU = 0.1  # Azure ML's AKS defaults, used when the spec sets no request
DEFAULT_MEMORY_GB = 0.5


def cpu_quantity(cores: float) -> str:
    """0.1 -> ``"100m"``; 2 -> ``"2"``."""
    milli = round(cores * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(gb: float) -> str:
    """0.5 -> ``"500M"``; 2 -> ``"2G"`` (decimal units, as Azure's memoryInGB)."""
    mega = round(gb * 1000)
    return f"{mega // 1000}G" if mega % 1000 == 0 else f"{mega}M"


def aks_manifests(
    spec: TargetSpec, *, service_type: str = "ClusterIP", service_port: int = 80
) -> list[dict[str, Any]]:
    """The manifests in apply order: Secret (if keys), Deployment, Service, HPA (if autoscaling).

    ``service_type`` ``LoadBalancer`` gives a public address as Azure ML's AKS
    services had; the default keeps the service inside the cluster.
    """
    labels = spec.all_labels()
    selector = {"app.kubernetes.io/name": spec.name, "edgeship.io/module": spec.name}

    def meta(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if spec.namespace:
            out["namespace"] = spec.namespace
        return out

    docs: list[dict[str, Any]] = []
    secret_name = f"{spec.name}-keys"
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    if spec.key_env:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(secret_name),
                "type": "Opaque",
                "stringData": dict(sorted(spec.key_env.items())),
            }
        )
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}}
            for k in sorted(spec.key_env)
        ]

    res = spec.resources
    cpu = res.cpu if res.cpu is not None else DEFAULT_CPU
    memory = res.memory_gb if res.memory_gb is not None else DEFAULT_MEMORY_GB
    resources: dict[str, Any] = {"requests": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}}
    limits: dict[str, str] = {}
    if res.cpu_limit is not None:
        limits["cpu"] = cpu_quantity(res.cpu_limit)
    # A memory limit protects the node: default it to the request, as Azure ML did.
    limits["memory"] = memory_quantity(res.memory_gb_limit if res.memory_gb_limit is not None else memory)
    resources["limits"] = limits

    container: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": env,
        "resources": resources,
        "livenessProbe": _probe(spec.liveness_path, spec.liveness, liveness=True),
        "readinessProbe": _probe(spec.readiness_path, READINESS),
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}},
    }
    if spec.autoscale is None:
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    docs.append(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(spec.name), "spec": deployment_spec}
    )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(spec.name),
            "spec": {
                "type": service_type,
                "selector": selector,
                "ports": [{"name": "http", "port": service_port, "targetPort": "http", "protocol": "TCP"}],
            },
        }
    )
    if spec.autoscale is not None:
        scale = spec.autoscale
        docs.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta(spec.name),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
                    "minReplicas": scale.min_replicas,
                    "maxReplicas": scale.max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": scale.target_utilization,
                                },
                            },
                        }
                    ],
                },
            }
        )
    return docs


def _probe(path: str, timing: Probe, *, liveness: bool = False) -> dict[str, Any]:
    # Kubernetes rejects a liveness successThreshold other than 1.
    return {
        "httpGet": {"path": path, "port": "http"},
        "initialDelaySeconds": timing.initial_delay_seconds,
        "periodSeconds": timing.period_seconds,
        "timeoutSeconds": timing.timeout_seconds,
        "successThreshold": 1 if liveness else timing.success_threshold,
        "failureThreshold": timing.failure_threshold,
    }
