"""Building a :class:`TargetSpec` from the Azure ML configs, so the CLI has one obvious path.

Why here and not in the CLI: which config value lands where (``numReplicas``
-> replicas, ``autoScaler`` -> HPA bounds, ``keys`` -> secrets, ``port`` -> a
host port on devices) is a target decision that tests should pin.
"""

from __future__ import annotations

import re

from edgeship.packager.config import DeploymentConfig, InferenceConfig

from .spec import Autoscale, Probe, Resources, TargetSpec

__all__ = ["target_spec"]


def target_spec(
    name: str,
    version: str,
    image: str,
    deployment: DeploymentConfig | None = None,
    inference: InferenceConfig | None = None,
    *,
    module_digest: str | None = None,
) -> TargetSpec:
    """The spec for module ``name``:``version`` built as ``image``, shaped by the two configs."""
    env = dict(inference.env) if inference is not None else {}
    if deployment is None:
        return TargetSpec(name=name, version=version, image=image, env=env, module_digest=module_digest)
    d = deployment
    autoscale = None
    if d.autoscaler is not None:
        autoscale = Autoscale(
            min_replicas=max(1, d.autoscaler.min_replicas),
            max_replicas=d.autoscaler.max_replicas,
            target_utilization=d.autoscaler.target_utilization,
        )
    liveness = Probe()
    if d.liveness is not None:
        liveness = Probe(
            initial_delay_seconds=d.liveness.initial_delay_seconds,
            period_seconds=d.liveness.period_seconds,
            timeout_seconds=d.liveness.timeout_seconds,
            success_threshold=d.liveness.success_threshold,
            failure_threshold=d.liveness.failure_threshold,
        )
    labels = {k: v for k, v in d.tags.items() if _is_label(k, v)}
    return TargetSpec(
        name=name,
        version=version,
        image=image,
        env=env,
        resources=Resources(
            cpu=d.cpu, memory_gb=d.memory_gb, cpu_limit=d.cpu_limit, memory_gb_limit=d.memory_gb_limit
        ),
        primary_key=d.primary_key if d.auth_enabled else None,
        secondary_key=d.secondary_key if d.auth_enabled and d.primary_key else None,
        autoscale=autoscale,
        replicas=max(1, d.replicas or 1),
        liveness=liveness,
        labels=labels,
        module_digest=module_digest,
        namespace=d.namespace,
        dns_name_label=d.dns_name_label,
        host_port=d.port if d.compute_type in ("local", "iotedge") else None,
    )


_LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def _is_label(key: str, value: str) -> bool:
    """Azure tags become Kubernetes labels only when both sides are valid label syntax."""
    return bool(_LABEL_KEY.match(key) and _LABEL_VALUE.match(value))
