"""Fault injection, for tests only: SIGKILL the agent at a named step of an install or update.

``EDGESHIP_AGENT_FAULT=<step>[:<module>]`` in the agent's environment, read once at start
(:func:`arm_from_env`, called by ``python -m edgeship.agent``), arms one point: the first
time that step runs (for that module, if one is named) the agent logs
``fault injected: <step> of <module>`` and kills itself with SIGKILL, as a power cut or
the OOM killer would. Nothing is flushed or cleaned up on the way: that is the point.
Unset (the only setting a device should ever have), :func:`point` returns at its first
comparison.

The points sit where their step happens, so a kill there leaves what a real kill would:

=============  ==========================================================================
download       ``fetch.download``: after bytes of a blob were written to its ``.part``
verify         ``execute``: the module folder is half laid out in its scratch folder
unpack         process runtime: the bundle is unpacked into a scratch folder, not renamed
environment    process runtime: the offline ``pip install`` of a new venv is running;
               Docker: the image was loaded, no container exists yet
install        process runtime: ``service.json`` is written; Docker: the container is created
start          the candidate's supervisor / container was started, not yet health-checked
health         the candidate runs and its health check has begun
move           fixed ``settings.port`` only: the old slot was stopped to free the port, the
               candidate is not yet moved onto it
switch         the candidate was recorded as the module's active slot; nothing reported yet
stop           the old slot was stopped, not yet removed
remove         the old slot was removed from the runtime, the agent has not forgotten it yet
=============  ==========================================================================

``docs/agent.md`` says what each kill leaves and what the restarted agent does; the tests
are ``tests/agent/test_agent_kill_points.py``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping

from edgeship.errors import ConfigError

__all__ = ["ENV", "STEPS", "arm", "arm_from_env", "armed", "point"]

ENV = "EDGESHIP_AGENT_FAULT"
STEPS = (
    "download", "verify", "unpack", "environment", "install", "start", "health", "move", "switch", "stop", "remove",
)

log = logging.getLogger("edgeship.agent")
_armed: tuple[str, str | None] | None = None  # (step, module or None for any module)


def arm(value: str | None) -> None:
    """Arm the point ``<step>[:<module>]`` (None or empty: disarm)."""
    global _armed
    if not value:
        _armed = None
        return
    step, _, module = value.partition(":")
    if step not in STEPS:
        raise ConfigError(
            f"{ENV}={value!r} names no fault point; use one of {', '.join(STEPS)}, optionally ':<module>' "
            "(a test-only setting: unset it on a device)."
        )
    _armed = (step, module or None)


def arm_from_env(environ: Mapping[str, str] = os.environ) -> None:
    arm(environ.get(ENV))


def armed() -> tuple[str, str | None] | None:
    return _armed


def point(step: str, module: str | None = None) -> None:
    """Kill this process with SIGKILL if ``step`` (of ``module``) is the armed point; else nothing."""
    if _armed is None or _armed[0] != step or (_armed[1] is not None and _armed[1] != module):
        return
    log.warning("fault injected: %s of %s (%s); killing the agent with SIGKILL", step, module or "?", ENV)
    os.kill(os.getpid(), signal.SIGKILL)
