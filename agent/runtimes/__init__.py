"""Module runtimes: where a verified module actually runs (a container, or a supervised process).

``ModuleRuntime`` is the interface the agent and ``edgeship deploy`` use;
``DockerRuntime`` imports the ``docker`` SDK only when constructed, and every name loads on
first use (the supervisor process imports this package and needs none of them), so importing
this package costs nothing on a device without Docker. See ``docs/runtimes.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from edgeship.agent.runtimes.docker import DockerRuntime
    from edgeship.agent.runtimes.process import ProcessLimits, ProcessRuntime, unpack_bundle

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


_HOMES = {
    **dict.fromkeys(
        ("KEY_ENV_VARS", "RESTART_POLICIES", "ModuleRuntime", "ModuleSpec", "ModuleState", "ModuleStatus",
         "RestartPolicy", "UnknownServiceError", "probe_health", "v2_model_name"),
        "base",
    ),
    **dict.fromkeys(("ProcessLimits", "ProcessRuntime", "unpack_bundle"), "process"),
    "DockerRuntime": "docker",  # the module itself is light; the SDK loads in DockerRuntime()
}


def __getattr__(name: str) -> Any:
    """Names load on first use: ``python -m edgeship.agent.runtimes.supervisor`` (one process per
    service, started at every update) imports this package first and needs none of them, and
    ``base`` and the process runtime pull in tarfile, subprocess and the manifest parser."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
