"""Module runtimes: where a verified module actually runs (a container, or a supervised process).

``ModuleRuntime`` is the interface the agent and ``edgeship deploy`` use;
``DockerRuntime`` imports the ``docker`` SDK only when constructed, so importing
this package costs nothing on a device without Docker. See ``docs/runtimes.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeship.agent.runtimes.base import (
    KEY_ENV_VARS,
    RESTART_POLICIES,
    ModuleRuntime,
    ModuleSpec,
    ModuleState,
    ModuleStatus,
    RestartPolicy,
    UnknownServiceError,
    probe_health,
    v2_model_name,
)
from edgeship.agent.runtimes.process import ProcessLimits, ProcessRuntime, unpack_bundle

if TYPE_CHECKING:
    from edgeship.agent.runtimes.docker import DockerRuntime

__all__ = [
    "KEY_ENV_VARS",
    "RESTART_POLICIES",
    "DockerRuntime",
    "ModuleRuntime",
    "ModuleSpec",
    "ModuleState",
    "ModuleStatus",
    "ProcessLimits",
    "ProcessRuntime",
    "RestartPolicy",
    "UnknownServiceError",
    "probe_health",
    "unpack_bundle",
    "v2_model_name",
]


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":  # the module itself is light; the SDK loads in DockerRuntime()
        from edgeship.agent.runtimes.docker import DockerRuntime

        return DockerRuntime
    raise AttributeError(name)
