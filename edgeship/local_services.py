"""Services on this machine: a verified module run by a runtime, plus one small record each.

Why a module of its own: ``edgeship deploy`` / ``edgeship service ...`` and the Azure ML
v1 layer's ``LocalWebservice`` (:mod:`edgeship.azureml`) do the same thing, so they share
this one implementation. Running is the job of :mod:`edgeship.agent.runtimes`; this
module picks a runtime, verifies the module before anything of it is unpacked, keeps the
record, waits until healthy and stops early on a crash loop with the entry script's own
error (a script that cannot import never answers, and waiting for the timeout only hides
why).

On disk, in the workspace::

    services/<name>.json     the record: runtime, module, port, auth keys (mode 0600)
    services/process/        the process runtime's state (unpacked bundles, venvs, logs)

Docker services live in the engine (containers named ``edgeship-<name>``). A record whose
``runtime`` is ``aci`` or ``aks`` stands for a module written for a cloud target: nothing
runs here, the record says where its artifacts are.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeship.errors import EdgeshipError, InputError, RuntimeFailure
from edgeship.fsutil import atomic_write_text
from edgeship.workspace import Workspace

if TYPE_CHECKING:
    from edgeship.agent.runtimes import ModuleRuntime, RestartPolicy
    from edgeship.modules.plain import ModuleManifest
    from edgeship.modules.store import StoredModule

__all__ = ["CLOUD_TARGETS", "RUNTIMES", "DeployRequest", "LocalServices", "script_env", "script_error"]

RUNTIMES = ("docker", "process", "auto")
CLOUD_TARGETS = ("aci", "aks")
KEYS_FILE = "service-keys.json"  # written by the packager beside a module whose auth is enabled
CRASHES_BEFORE_GIVING_UP = 2  # exits before the first healthy answer that count as a crash loop
_EXCEPTION = re.compile(r"(?<![\w.])(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::\s.*|$)")

Progress = Callable[[str], contextlib.AbstractContextManager[Any]]


def _no_progress(_what: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def script_error(log: str) -> str | None:
    """The last exception line (``ImportError: cannot import name ...``) in a service's log, if any."""
    found = None
    for line in log.splitlines():
        # a traceback's last line, or the scoring server's one-line report ("Importing score.py failed at ...: X")
        match = _EXCEPTION.search(line.strip())
        if match:
            found = match.group(0)
    return found


def script_env(scoring_timeout_ms: int | None) -> dict[str, str]:
    """The scoring server's environment a deployment config asks for: ``scoringTimeoutMs`` as SCORING_TIMEOUT_MS."""
    return {"SCORING_TIMEOUT_MS": str(scoring_timeout_ms)} if scoring_timeout_ms else {}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DeployRequest:
    """What to run: a stored module as service ``name``."""

    name: str
    module: StoredModule
    runtime: str = "auto"
    port: int | None = None
    restart: str = "on-failure"
    timeout: float = 120.0
    trust_root: Path | None = None
    env: dict[str, str] | None = None  # added to the scoring server's environment (SCORING_TIMEOUT_MS)


class LocalServices:
    """The services of one workspace."""

    def __init__(self, workspace: Workspace, progress: Progress = _no_progress) -> None:
        self.workspace = workspace
        self.progress = progress

    @property
    def folder(self) -> Path:
        return self.workspace.root / "services"

    def record_path(self, name: str) -> Path:
        from edgeship.agent.runtimes.base import validate_service_name

        return self.folder / f"{validate_service_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self.record_path(name).is_file()

    def record(self, name: str) -> dict[str, Any]:
        path = self.record_path(name)
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise InputError(f"No service {name} in this workspace; see 'edgeship service list'.") from None
        except ValueError as exc:
            raise InputError(f"The record {path} is damaged ({exc}); delete it and deploy again.") from exc

    def records(self) -> list[dict[str, Any]]:
        names = sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []
        return [self.record(n) for n in names]

    def runtime(self, kind: str) -> ModuleRuntime:
        from edgeship.agent.runtimes import ProcessRuntime

        if kind == "process":
            return ProcessRuntime(self.folder / "process")
        if kind in CLOUD_TARGETS:
            raise InputError(f"This service is a module written for {kind.upper()}; nothing of it runs here.")
        from edgeship.agent.runtimes.docker import DockerRuntime

        return DockerRuntime()

    def _choose_runtime(self, wanted: str, manifest: ModuleManifest) -> ModuleRuntime:
        """``auto``: Docker when the module has an image and an engine answers, else a process."""
        if wanted not in RUNTIMES:
            raise InputError(f"--runtime {wanted!r} is unknown; use one of {', '.join(RUNTIMES)}.")
        if wanted != "auto":
            return self.runtime(wanted)
        if manifest.image is not None and manifest.image.archive is not None:
            try:
                return self.runtime("docker")
            except RuntimeFailure:
                pass
        return self.runtime("process")

    # -- deploy -------------------------------------------------------------------
    def deploy(self, request: DeployRequest, *, replaced: Callable[[dict[str, Any]], None] | None = None,
               keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Verify, install, start and wait until healthy; the record written. Replaces a service of that name.

        ``keys`` keeps the auth keys of the service being updated; by default they come
        from the module (the packaged ones) or are made fresh.
        """
        from edgeship.agent.runtimes import ModuleSpec
        from edgeship.modules.verify import load_trust_root_file, local_trust_root, verify_module_dir

        stored, name = request.module, request.name
        path = self.record_path(name)
        try:
            trust = load_trust_root_file(request.trust_root) if request.trust_root else local_trust_root(self.workspace)
            verified = verify_module_dir(stored.directory, trust)
        except EdgeshipError as exc:
            raise type(exc)(f"Refusing to deploy {stored.ref}: {exc}") from exc
        manifest = verified.manifest
        if path.exists():
            old = self.record(name)
            if replaced is not None:
                replaced(old)
            self._remove(name, old)
        engine = self._choose_runtime(request.runtime, manifest)
        port = request.port or _free_port()
        spec = ModuleSpec(
            name=name,
            module_dir=verified.directory,
            manifest=manifest,
            port=port,
            auth_keys=keys if keys is not None and manifest.auth_enabled else _keys(verified.directory, manifest),
            env=dict(request.env or {}),
            restart=cast("RestartPolicy", request.restart),  # ModuleSpec refuses an unknown policy
        )
        record: dict[str, Any] = {
            "name": name,
            "runtime": engine.kind,
            "module": manifest.ref,
            "moduleDigest": stored.digest,
            "port": port,
            "keys": list(spec.auth_keys),
            "uris": _uris(port, manifest),
            "env": dict(spec.env),
            "createdAt": time.time(),
        }
        self._write(path, record)
        with self.progress(f"Installing {manifest.ref} as {name} ({engine.kind} runtime)"):
            engine.install(spec)
        with self.progress(f"Starting {name} and waiting until it is healthy"):
            engine.start(name)
            try:
                self.wait_healthy(engine, name, request.timeout)
            except RuntimeFailure:
                engine.stop(name)  # keep it installed, so 'edgeship service logs' still works
                raise
        return record

    def record_cloud(self, name: str, stored: StoredModule, target: str) -> dict[str, Any]:
        """Record a module written for ACI or AKS: where its signed module and target artifacts are."""
        path = self.record_path(name)
        if path.exists():
            self._remove(name, self.record(name))
        keys_file = stored.directory / KEYS_FILE
        keys = json.loads(keys_file.read_text()) if keys_file.is_file() else {}
        record: dict[str, Any] = {
            "name": name,
            "runtime": target,
            "module": stored.ref,
            "moduleDigest": stored.digest,
            "port": None,
            "keys": [keys[k] for k in ("primaryKey", "secondaryKey") if keys.get(k)],
            "uris": {},
            "artifacts": str(stored.directory / "targets"),
            "createdAt": time.time(),
        }
        self._write(path, record)
        return record

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def wait_healthy(self, engine: ModuleRuntime, name: str, timeout: float) -> None:
        """Until healthy; RuntimeFailure at once on ``failed``/``stopped`` or a crash loop, with the script's error."""
        from edgeship.agent.runtimes.base import health_poll_delay, probe_health

        began = time.monotonic()
        while True:
            status = engine.status(name)
            if status.state == "running" and probe_health(status.port):
                return
            late = time.monotonic() - began > timeout
            log = engine.logs(name, tail=200) if status.state != "running" or late else ""
            error = script_error(log)
            # an exit with the script's own error is not going to heal; an unexplained one gets a second chance
            crashed = status.state == "backoff" and (
                error is not None or status.restart_count + 1 >= CRASHES_BEFORE_GIVING_UP)
            if status.state in ("failed", "stopped") or crashed or late:
                if crashed or (error and status.state != "running"):
                    why = f"it exited {status.restart_count + 1} time(s) before answering"
                elif status.state != "running":
                    why = f"it is {status.state}" + (
                        f" (exit code {status.exit_code})" if status.exit_code is not None else "")
                else:
                    why = f"it did not answer on port {status.port} within {timeout:g} s"
                if error:
                    raise RuntimeFailure(
                        f"Service {name} ({status.module}) is not healthy: {why}; the entry script failed with "
                        f"'{error}'. Fix the script (see 'edgeship service logs {name}') and deploy again."
                    )
                tail = "\n".join(log.strip().splitlines()[-15:])
                raise RuntimeFailure(
                    f"Service {name} ({status.module}) is not healthy: {why}. Last log lines:\n{tail or '(no output)'}"
                )
            time.sleep(health_poll_delay(time.monotonic() - began))

    # -- the rest of a service's life --------------------------------------------
    def delete(self, name: str) -> None:
        self._remove(name, self.record(name))

    def _remove(self, name: str, record: dict[str, Any]) -> None:
        from edgeship.agent.runtimes import UnknownServiceError

        kind = str(record.get("runtime", "process"))
        if kind not in CLOUD_TARGETS:
            # Already gone from the runtime (a container removed by hand): forget the record anyway.
            with contextlib.suppress(UnknownServiceError):
                self.runtime(kind).remove(name)
        self.record_path(name).unlink(missing_ok=True)

    def state(self, record: dict[str, Any]) -> tuple[str, int | None, str | None]:
        """(state, restart count, last error) of a recorded service."""
        kind = str(record["runtime"])
        if kind in CLOUD_TARGETS:
            return ("packaged", None, None)
        try:
            status = self.runtime(kind).status(str(record["name"]))
        except RuntimeFailure as exc:
            return ("unknown", None, str(exc))
        return (status.state, status.restart_count, status.last_error)

    def logs(self, name: str, tail: int = 100) -> str:
        record = self.record(name)
        return self.runtime(str(record["runtime"])).logs(name, tail)

    def restart(self, name: str, timeout: float = 120.0) -> None:
        """Stop and start the same install again (``LocalWebservice.reload``'s job after a script edit)."""
        record = self.record(name)
        engine = self.runtime(str(record["runtime"]))
        engine.stop(name)
        engine.start(name)
        try:
            self.wait_healthy(engine, name, timeout)
        except RuntimeFailure:
            engine.stop(name)
            raise

    def regenerate_key(self, name: str, which: str) -> tuple[str, ...]:
        """A fresh Primary or Secondary key, as ``az ml service regen-key``; the service is restarted with it."""
        record = self.record(name)
        keys = list(record.get("keys") or [])
        if not keys:
            raise InputError(f"Service {name} has no auth keys (auth is off); deploy it with authEnabled true.")
        index = {"primary": 0, "secondary": 1}.get(which.lower())
        if index is None:
            raise InputError(f"--key {which!r} is unknown; use Primary or Secondary.")
        while len(keys) < 2:
            keys.append(keys[0])
        keys[index] = secrets.token_urlsafe(32)
        from edgeship.modules.store import ModuleStore
        from edgeship.registry import parse_model_ref

        ref = parse_model_ref(str(record["module"]))
        stored = ModuleStore(self.workspace).get(ref.name, ref.version)
        if str(record["runtime"]) in CLOUD_TARGETS:
            record["keys"] = keys
            self._write(self.record_path(name), record)
            return tuple(keys)
        self.deploy(DeployRequest(name=name, module=stored, runtime=str(record["runtime"]), port=record["port"],
                                  env=dict(record.get("env") or {})), keys=tuple(keys))
        return tuple(keys)


def _keys(module_dir: Path, manifest: ModuleManifest) -> tuple[str, ...]:
    """The packaged keys when the packager wrote them, else two fresh ones; none without auth."""
    if not manifest.auth_enabled:
        return ()
    packaged = module_dir / KEYS_FILE
    if packaged.is_file():
        data = json.loads(packaged.read_text())
        return tuple(str(data[k]) for k in ("primaryKey", "secondaryKey") if data.get(k))
    return (secrets.token_urlsafe(32), secrets.token_urlsafe(32))


def _uris(port: int, manifest: ModuleManifest) -> dict[str, str]:
    from edgeship.agent.runtimes import v2_model_name

    base = f"http://127.0.0.1:{port}"
    return {"scoring": f"{base}/score", "v2": f"{base}/v2/models/{v2_model_name(manifest)}/infer",
            "swagger": f"{base}/swagger.json"}
