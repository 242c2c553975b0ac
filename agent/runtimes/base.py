"""The one interface every module runtime implements, and the data it speaks in.

The agent's reconcile loop and ``edgeship deploy`` only ever see :class:`ModuleRuntime`:
which engine runs a module (a container, a supervised process) is a detail of the
runtime. Everything here is plain data with no I/O, except :func:`probe_health`
(two GETs to the module's own server, ``local_http.py``) and :func:`wait_until_healthy`,
which both runtimes share so that "healthy" means the same thing whatever runs the module.

Invariants:

- A service name is the unit of identity: one name, one running module version.
  Blue/green is two names (the agent picks them), never two versions under one.
- ``install`` prepares everything slow (image load, venv, unpacking) and starts
  nothing; ``start`` is fast and repeatable; ``remove`` leaves no process or
  container behind (shared caches such as venvs and images stay for reuse).
- Auth keys travel to the scoring server in environment variables
  (``EDGESHIP_PRIMARY_KEY``/``EDGESHIP_SECONDARY_KEY``), never on a command line
  where ``ps`` would show them.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from edgeship.agent.runtimes import local_http
from edgeship.errors import RuntimeFailure
from edgeship.modules.plain import MANIFEST_FILE, ModuleManifest
from edgeship.records import asdict, field, record

__all__ = [
    "KEY_ENV_VARS",
    "RESTART_POLICIES",
    "SERVER_PORT",
    "ModuleRuntime",
    "ModuleSpec",
    "ModuleState",
    "ModuleStatus",
    "RestartPolicy",
    "UnknownServiceError",
    "health_poll_delay",
    "probe_health",
    "v2_model_name",
    "validate_service_name",
    "wait_until_healthy",
]

RestartPolicy = Literal["always", "on-failure", "never"]
ModuleState = Literal["running", "stopped", "failed", "backoff"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("always", "on-failure", "never")
KEY_ENV_VARS = ("EDGESHIP_PRIMARY_KEY", "EDGESHIP_SECONDARY_KEY")
SERVER_PORT = 5001  # the scoring server's port inside a module image (manifest.ports[0])
_HEALTH_POLL_FAST = 0.02  # seconds between health probes while a server is likely starting
_HEALTH_POLL_FAST_FOR = 5.0  # seconds of fast polling after the wait began
_HEALTH_POLL = 0.25  # seconds between health probes after that
_HEALTH_BODY = 64 * 1024  # bytes a health answer may have (the scoring server's are a few dozen)


class UnknownServiceError(RuntimeFailure):
    """The runtime has no service by that name (never installed, or removed)."""


def validate_service_name(name: str) -> str:
    """Service names become folder and container names: lowercase letters, digits, ``-``, ``_``, ``.``."""
    ok = 0 < len(name) <= 63 and name[0].isalnum() and all(c.isalnum() or c in "-_." for c in name)
    if not ok or name != name.lower():
        raise RuntimeFailure(
            f"Service name {name!r} is not usable; use 1-63 lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    return name


@record
class ModuleSpec:
    """What to run: a verified module directory as service ``name`` on host port ``port``.

    ``module_dir`` must already have passed ``verify_module_dir``; runtimes trust
    its artifacts and do not verify signatures again. ``env`` is added to the
    scoring server's environment (keys win over it).
    """

    name: str
    module_dir: Path
    manifest: ModuleManifest
    port: int
    auth_keys: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    restart: RestartPolicy = "on-failure"

    def __post_init__(self) -> None:
        validate_service_name(self.name)
        if self.restart not in RESTART_POLICIES:
            known = ", ".join(RESTART_POLICIES)
            raise RuntimeFailure(f"Restart policy {self.restart!r} is unknown; use one of {known}.")
        if not 0 < self.port < 65536:
            raise RuntimeFailure(f"Port {self.port} is out of range; give a TCP port between 1 and 65535.")
        if len(self.auth_keys) > 2 or any(not k for k in self.auth_keys):
            raise RuntimeFailure("Give at most two non-empty auth keys (primary and secondary).")

    @property
    def module_digest(self) -> str:
        """sha256 of ``module.json``: the identity a signature covers, used as a label."""
        return "sha256:" + hashlib.sha256((self.module_dir / MANIFEST_FILE).read_bytes()).hexdigest()

    def key_env(self) -> dict[str, str]:
        return dict(zip(KEY_ENV_VARS, self.auth_keys, strict=False))


@record
class ModuleStatus:
    """What a runtime knows about one service now; ``to_dict`` is the reported form."""

    name: str
    module: str  # "name:version" of the module it runs
    state: ModuleState
    port: int
    pid: int | None = None
    container_id: str | None = None
    exit_code: int | None = None
    restart_count: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def v2_model_name(manifest: ModuleManifest) -> str:
    """The name the scoring server answers to under ``/v2/models/``: script stem, else the model's name."""
    if manifest.entry_script:
        return Path(manifest.entry_script).stem
    return manifest.models[0].name if manifest.models else manifest.name


def probe_health(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when the scoring server answers liveness ``GET /`` with 200 and readiness too."""
    for path in ("/", "/v2/health/ready"):
        try:
            if local_http.get(port, path, host=host, timeout=timeout, max_body=_HEALTH_BODY).status != 200:
                return False
        except local_http.LocalHTTPError:
            return False
    return True


def health_poll_delay(waited: float) -> float:
    """Seconds to sleep before the next health probe, ``waited`` seconds into a wait.

    A model-only update is usually healthy within a few seconds, so a coarse interval
    there costs up to its whole length on every update; a refused connection is cheap,
    so probe often at first and back off for servers whose ``init()`` is slow.
    """
    return _HEALTH_POLL_FAST if waited < _HEALTH_POLL_FAST_FOR else _HEALTH_POLL


def wait_until_healthy(runtime: ModuleRuntime, name: str, timeout: float) -> ModuleStatus:
    """Poll ``status`` and the health probe until healthy; RuntimeFailure with the log tail otherwise.

    Gives up early when the service reaches ``failed`` or ``stopped`` (nothing will
    answer), so a module whose ``init()`` raises fails in about a second, not at the timeout.
    """
    began = time.monotonic()
    deadline = began + timeout
    while True:
        status = runtime.status(name)
        if status.state == "running" and probe_health(status.port):
            return status
        if status.state in ("failed", "stopped") or time.monotonic() > deadline:
            why = (
                f"it is {status.state}" + (f" (exit code {status.exit_code})" if status.exit_code is not None else "")
                if status.state != "running"
                else f"it did not answer on port {status.port} within {timeout:g} s"
            )
            tail = runtime.logs(name, tail=15).strip()
            raise RuntimeFailure(
                f"Service {name} ({status.module}) is not healthy: {why}. Last log lines:\n{tail or '(no output)'}"
            )
        time.sleep(health_poll_delay(time.monotonic() - began))


@runtime_checkable
class ModuleRuntime(Protocol):
    """Runs modules as named services. Every method raises RuntimeFailure (one sentence) on failure."""

    kind: str  # "docker" or "process"

    def install(self, spec: ModuleSpec) -> ModuleStatus:
        """Prepare ``spec`` to run (slow, idempotent); replaces a stopped service of the same name."""
        ...

    def start(self, name: str) -> ModuleStatus: ...

    def stop(self, name: str, timeout: float = 10.0) -> ModuleStatus:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; a stopped service is not restarted."""
        ...

    def remove(self, name: str) -> None:
        """Stop if needed and forget the service; UnknownServiceError if there is none."""
        ...

    def status(self, name: str) -> ModuleStatus: ...

    def list(self) -> builtins.list[ModuleStatus]: ...

    def logs(self, name: str, tail: int = 100) -> str:
        """The last ``tail`` lines the scoring server wrote (stdout and stderr together)."""
        ...

    def wait_healthy(self, name: str, timeout: float = 60.0) -> ModuleStatus: ...

    def sweep(self) -> builtins.list[Path]:
        """Delete the half-built things a killed caller left (scratch folders); return them.

        Called once when the agent starts, before it installs anything; never touches a
        service, a finished cache entry or the scratch of a builder that still runs.
        """
        ...
