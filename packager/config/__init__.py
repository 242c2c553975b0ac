"""Azure ML v1 ``inferenceconfig`` / ``deploymentconfig`` files, read as users have them.

Why: edgeship promises that an unmodified Azure ML v1 project packages. This
package is pure (it reads the config files and the files they name, nothing
else) and returns frozen dataclasses plus one-line warnings that the CLI
prints. See docs/adr/0004-azure-config-compat.md for the policy.
"""

from __future__ import annotations

from .conda import AZURE_SERVING_PACKAGES, CondaEnvironment, parse_conda, read_conda_file
from .deployment import COMPUTE_TYPES, Autoscaler, DeploymentConfig, LivenessProbe, load_deployment_config
from .inference import InferenceConfig, RegistryCredentials, load_inference_config
from .names import DNS_TARGETS, check_module_name, derive_module_name

__all__ = [
    "AZURE_SERVING_PACKAGES",
    "COMPUTE_TYPES",
    "DNS_TARGETS",
    "Autoscaler",
    "CondaEnvironment",
    "DeploymentConfig",
    "InferenceConfig",
    "LivenessProbe",
    "RegistryCredentials",
    "check_module_name",
    "derive_module_name",
    "load_deployment_config",
    "load_inference_config",
    "parse_conda",
    "read_conda_file",
]
