"""Target artifacts for a built module: ACI YAML, Kubernetes manifests, IoT Edge manifests.

Why: a module is shipped to edgeship's own agents, but the same module should
run where Azure ML v1 users ran theirs. Every generator here is a pure
function of a :class:`TargetSpec`; only :func:`write_target` touches the disk.
See docs/targets.md for how each artifact is used.
"""

from __future__ import annotations

from .aci import ACI_API_VERSION, aci_container_group
from .aks import KUBERNETES_VERSION, aks_manifests
from .from_config import target_spec
from .iotedge import (
    CREATE_OPTIONS_CHUNK,
    CREATE_OPTIONS_MAX_CHUNKS,
    create_options,
    iotedge_manifest,
    iotedge_template,
    join_create_options,
    split_create_options,
)
from .spec import (
    DEFAULT_PORT,
    KEY_ENV_PRIMARY,
    KEY_ENV_SECONDARY,
    Autoscale,
    Probe,
    Resources,
    TargetSpec,
)
from .write import TARGETS, render_target, write_target

__all__ = [
    "ACI_API_VERSION",
    "CREATE_OPTIONS_CHUNK",
    "CREATE_OPTIONS_MAX_CHUNKS",
    "DEFAULT_PORT",
    "KEY_ENV_PRIMARY",
    "KEY_ENV_SECONDARY",
    "KUBERNETES_VERSION",
    "TARGETS",
    "Autoscale",
    "Probe",
    "Resources",
    "TargetSpec",
    "aci_container_group",
    "aks_manifests",
    "create_options",
    "iotedge_manifest",
    "iotedge_template",
    "join_create_options",
    "render_target",
    "split_create_options",
    "target_spec",
    "write_target",
]
