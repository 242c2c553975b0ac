"""What every target artifact is generated from: one small, validated description of the module.

Why: the ACI, Kubernetes and IoT Edge generators must agree on names, ports,
keys and health paths, so they all read the same frozen :class:`TargetSpec`
and do no I/O. The name rules are the strictest of the three platforms (a
Kubernetes DNS-1123 label), so a spec that validates here is valid everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgeship.errors import InputError

__all__ = [
    "DEFAULT_PORT",
    "KEY_ENV_PRIMARY",
    "KEY_ENV_SECONDARY",
    "LABEL_PREFIX",
    "READINESS",
    "Autoscale",
    "Probe",
    "Resources",
    "TargetSpec",
]

DEFAULT_PORT = 5001  # the scoring server's port inside the container
# The scoring server reads its Bearer keys from these variables.
KEY_ENV_PRIMARY = "EDGESHIP_PRIMARY_KEY"
KEY_ENV_SECONDARY = "EDGESHIP_SECONDARY_KEY"
LABEL_PREFIX = "edgeship.io"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Resources:
    """CPU in cores and memory in GB (10^9 bytes, as Azure means it); None = not set."""

    cpu: float | None = None
    memory_gb: float | None = None
    cpu_limit: float | None = None
    memory_gb_limit: float | None = None

    def __post_init__(self) -> None:
        for name in ("cpu", "memory_gb", "cpu_limit", "memory_gb_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"resources.{name} must be above 0, got {value}")
        if self.cpu is not None and self.cpu_limit is not None and self.cpu_limit < self.cpu:
            raise InputError(f"resources.cpu_limit ({self.cpu_limit}) is below resources.cpu ({self.cpu})")
        if (
            self.memory_gb is not None
            and self.memory_gb_limit is not None
            and self.memory_gb_limit < self.memory_gb
        ):
            raise InputError(
                f"resources.memory_gb_limit ({self.memory_gb_limit}) is below "
                f"resources.memory_gb ({self.memory_gb})"
            )

    @property
    def effective_cpu_limit(self) -> float | None:
        """The cap a single-container runtime enforces: the limit, else the request."""
        return self.cpu_limit if self.cpu_limit is not None else self.cpu

    @property
    def effective_memory_gb_limit(self) -> float | None:
        return self.memory_gb_limit if self.memory_gb_limit is not None else self.memory_gb


@dataclass(frozen=True)
class Autoscale:
    """Horizontal autoscaling bounds; target utilisation is a percentage of requested CPU."""

    min_replicas: int = 1
    max_replicas: int = 10
    target_utilization: int = 70

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise InputError(f"autoscale.min_replicas must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise InputError(
                f"autoscale.max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        if not 1 <= self.target_utilization <= 100:
            raise InputError(f"autoscale.target_utilization must be 1..100, got {self.target_utilization}")


@dataclass(frozen=True)
class Probe:
    """Liveness timing (Azure ML's ``livenessProbeRequirements``), in seconds."""

    initial_delay_seconds: int = 30
    period_seconds: int = 10
    timeout_seconds: int = 5
    success_threshold: int = 1
    failure_threshold: int = 3


# Readiness is the scoring server saying the model is loaded: checked early and often.
READINESS = Probe(
    initial_delay_seconds=5, period_seconds=5, timeout_seconds=5, success_threshold=1, failure_threshold=3
)


@dataclass(frozen=True)
class TargetSpec:
    """One module as the targets see it.

    ``name`` must be a DNS-1123 label (lowercase letters, digits, '-', at most
    63 characters) because Kubernetes, ACI and IoT Edge all use it as an
    identifier. ``image`` is a tag (``edgeship/digits:3``) or a digest
    reference (``registry/x@sha256:...``); a digest is what pins a deployment.
    """

    name: str
    version: str
    image: str
    port: int = DEFAULT_PORT
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    primary_key: str | None = None
    secondary_key: str | None = None
    autoscale: Autoscale | None = None
    replicas: int = 1
    liveness_path: str = "/"
    readiness_path: str = "/v2/health/ready"
    liveness: Probe = field(default_factory=Probe)
    labels: Mapping[str, str] = field(default_factory=dict)
    module_digest: str | None = None
    namespace: str | None = None
    dns_name_label: str | None = None
    host_port: int | None = None  # iotedge/local only: publish the scoring port on the host

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name):
            raise InputError(
                f"module name '{self.name}' must be lowercase letters, digits and '-', start and end with a "
                "letter or digit, at most 63 characters (a DNS label, as Kubernetes and ACI require)"
            )
        if not self.image or any(c.isspace() for c in self.image):
            raise InputError(f"image reference '{self.image}' must be non-empty and contain no spaces")
        for port in (self.port, self.host_port):
            if port is not None and not 1 <= port <= 65535:
                raise InputError(f"port {port} must be between 1 and 65535")
        if self.replicas < 1:
            raise InputError(f"replicas must be at least 1, got {self.replicas}")
        for key in self.env:
            if not _ENV_NAME.match(key):
                raise InputError(f"environment variable name '{key}' must match [A-Za-z_][A-Za-z0-9_]*")
            if key in (KEY_ENV_PRIMARY, KEY_ENV_SECONDARY):
                raise InputError(f"environment variable {key} is reserved for the auth keys; use primary_key")
        if self.secondary_key is not None and self.primary_key is None:
            raise InputError("a secondary key needs a primary key")
        for path in (self.liveness_path, self.readiness_path):
            if not path.startswith("/"):
                raise InputError(f"health path '{path}' must start with '/'")
        for key, value in self.labels.items():
            if not _LABEL_VALUE.match(value) or len(value) > 63:
                raise InputError(f"label {key}={value!r} is not a valid Kubernetes label value")

    @property
    def auth_enabled(self) -> bool:
        return self.primary_key is not None

    @property
    def key_env(self) -> dict[str, str]:
        """The secret environment: the auth keys under the names the scoring server reads."""
        out: dict[str, str] = {}
        if self.primary_key is not None:
            out[KEY_ENV_PRIMARY] = self.primary_key
        if self.secondary_key is not None:
            out[KEY_ENV_SECONDARY] = self.secondary_key
        return out

    def all_labels(self) -> dict[str, str]:
        """Labels every artifact carries: name, version, digest (hex only: label values have no ':')."""
        out = {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/managed-by": "edgeship",
            f"{LABEL_PREFIX}/module": self.name,
        }
        version = re.sub(r"[^A-Za-z0-9_.-]", "-", self.version)[:63].strip("-_.")
        if version:
            out["app.kubernetes.io/version"] = version
        if self.module_digest:
            # "sha256:<64 hex>" is too long for a label value; the first 63 hex chars identify it.
            out[f"{LABEL_PREFIX}/module-digest"] = self.module_digest.split(":")[-1][:63]
        out.update(self.labels)
        return out
