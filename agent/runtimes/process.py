"""``ProcessRuntime``: a module as a supervised ``edgeship serve`` process in a venv of its own.

On-disk layout under ``state_dir`` (every folder appears whole or not at all):

    modules/<module>/<version>/app/   the unpacked bundle (``--model-dir``); ``.bundle-digest`` inside
    venvs/<lock hex>/                 one venv per environment lock digest, shared and reused
    run/<service>/service.json        what the supervisor runs (mode 0600: it holds the auth keys)
    run/<service>/run.json            the supervisor's state (pid, exit code, restarts)
    run/<service>/server.log          the scoring server's stdout and stderr

Why a venv per lock digest: two module versions that differ only in their models
have the same ``requirements.lock`` and so the same digest; the second installs
in the time it takes to unpack its bundle. A venv is built offline from the
bundle's wheelhouse (``--no-index --require-hashes``) in a scratch folder and
renamed into place, so a crash mid-build leaves only scratch. A venv is not
relocatable in general (console scripts carry the build path in their shebang), so
the server is started as ``<venv>/bin/python -m edgeship``, which is.

The scoring server is started by a supervisor process (see ``supervisor.py``),
which outlives the caller and applies the restart policy; ``status`` trusts a pid
only together with its start time, so a reused pid is never mistaken for ours.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

from edgeship.agent import faults
from edgeship.agent.runtimes.base import (
    ModuleSpec,
    ModuleState,
    ModuleStatus,
    UnknownServiceError,
    validate_service_name,
    wait_until_healthy,
)
from edgeship.agent.runtimes.procinfo import LOG_FILE, RUN_FILE, SERVICE_FILE, process_start_time
from edgeship.errors import RuntimeFailure
from edgeship.fsutil import atomic_dir, atomic_write_text, scratch_dir, sweep_scratch
from edgeship.modules.plain import ModuleManifest, Part
from edgeship.records import record

__all__ = ["ProcessLimits", "ProcessRuntime", "unpack_bundle"]

_PIP_TIMEOUT = 900  # seconds for an offline venv install (onnxruntime and numpy unpack slowly on a device)
_START_TIMEOUT = 10.0  # seconds for the supervisor to report that it runs
_DIGEST_MARKER = ".bundle-digest"
_WHEELHOUSE = "wheelhouse"  # the bundle's folder of wheels (packager/bundle.py)
_PASS_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SOURCE_DATE_EPOCH")

# Runs a build step (venv, pip) so that it dies when the thread that started it does, as
# a killed agent's scratch must not be written after its successor swept it: the Linux
# parent-death signal (prctl PR_SET_PDEATHSIG = 1), then exec. argv: caller pid, command...
_DIE_WITH_CALLER = (
    "import ctypes, os, signal, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0 or os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the agent that started this build is gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@record
class ProcessLimits:
    """rlimits for the scoring server. ``None`` means no limit.

    ``address_space_bytes`` is RLIMIT_AS, in bytes of *virtual* memory: thread
    stacks and allocator arenas count although never touched, so it is set to
    ``ADDRESS_SPACE_FACTOR`` times the module's memory limit, not to the limit itself.
    ``open_files`` is RLIMIT_NOFILE, a count of descriptors.
    """

    address_space_bytes: int | None = None
    open_files: int | None = 4096

    ADDRESS_SPACE_FACTOR = 2

    @classmethod
    def for_spec(cls, spec: ModuleSpec) -> ProcessLimits:
        res = spec.manifest.resources
        memory_gb = res.memory_gb_limit or res.memory_gb
        address = int(memory_gb * 2**30 * cls.ADDRESS_SPACE_FACTOR) if memory_gb else None
        return cls(address_space_bytes=address)


def unpack_bundle(bundle: Path, dest: Path, *, wheelhouse: bool = True) -> None:
    """:func:`unpack_here` in the agent's worker, so the agent never imports ``tarfile`` (ADR 0046)."""
    from edgeship.agent.offload import run_job

    run_job({"kind": "unpack", "bundle": str(bundle), "dest": str(dest), "wheelhouse": wheelhouse},
            fallback=RuntimeFailure)


def unpack_here(bundle: Path, dest: Path, *, wheelhouse: bool = True) -> None:
    """Extract ``bundle`` into the empty folder ``dest``, refusing anything that could escape it.

    An edgeship bundle holds only files and folders with relative names, so an
    absolute name, a ``..`` component, a link of any kind or a device entry means
    the tar was not made by the packager (tar slip): it is refused before any byte
    is written. ``wheelhouse=False`` leaves out ``wheelhouse/`` (most of a bundle's
    bytes), which only building a venv reads; every entry is still checked.
    """
    import tarfile  # in the worker (python -m edgeship.agent.worker), not the agent (ADR 0046)

    try:
        with tarfile.open(bundle, mode="r:") as tar:
            members = tar.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or member.name.startswith("\\"):
                    raise RuntimeFailure(
                        f"Bundle {bundle} has an entry {member.name!r} outside its folder; refusing to unpack it."
                    )
                if not (member.isfile() or member.isdir()):
                    raise RuntimeFailure(
                        f"Bundle {bundle} has a link or special entry {member.name!r}; "
                        "edgeship bundles hold only files and folders, refusing to unpack it."
                    )
            if not wheelhouse:
                members = [m for m in members if PurePosixPath(m.name).parts[:1] != (_WHEELHOUSE,)]
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise RuntimeFailure(f"Bundle {bundle} could not be unpacked ({exc}); re-download or re-package it.") from exc


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


class ProcessRuntime:
    """Runs modules as supervised processes on this machine; all state lives under ``state_dir``."""

    kind = "process"

    def __init__(self, state_dir: Path, python: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.python = python or sys.executable  # builds venvs and runs supervisors

    # -- paths ----------------------------------------------------------------
    def app_dir(self, module: str, version: int) -> Path:
        return self.state_dir / "modules" / module / str(version) / "app"

    def venv_dir(self, lock_digest: str) -> Path:
        return self.state_dir / "venvs" / lock_digest.removeprefix("sha256:")

    def service_dir(self, name: str) -> Path:
        return self.state_dir / "run" / validate_service_name(name)

    # -- install ----------------------------------------------------------------
    def needed_parts(self, manifest: ModuleManifest) -> list[Part]:
        """The parts of a schemaVersion 2 module this runtime installs from: the source, the model
        chunks, and the wheels only when no venv of the module's lock digest exists yet."""
        parts = manifest.parts
        if parts is None:
            return []
        venv_ready = (self.venv_dir(manifest.environment.lock_digest) / "bin" / "python").exists()
        wheels = [] if venv_ready else [Part(w.digest, w.size) for w in parts.wheels]
        return [parts.source, *wheels, *(c for m in parts.models for c in m.chunks)]

    def install(self, spec: ModuleSpec) -> ModuleStatus:
        manifest = spec.manifest
        current = self._maybe_status(spec.name)
        if current is not None and current.state in ("running", "backoff"):
            raise RuntimeFailure(f"Service {spec.name} is running {current.module}; stop it before installing again.")
        venv_ready = (self.venv_dir(manifest.environment.lock_digest) / "bin" / "python").exists()
        app = self._unpack(spec, wheelhouse=not venv_ready)
        venv = self.ensure_venv(manifest.environment.lock_digest, app, module=manifest.name)
        data_dir = self.service_dir(spec.name) / "data"
        command = [str(venv / "bin" / "python"), "-m", "edgeship", "serve", "--model-dir", str(app)]
        if manifest.entry_script:
            rel = manifest.entry_script.removeprefix("src/")
            command += ["--entry-script", str(app / "src" / rel), "--source-dir", str(app / "src")]
        command += ["--host", "127.0.0.1", "--port", str(spec.port), "--data-dir", str(data_dir)]
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.update(
            PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            AML_APP_ROOT=str(app / "src"),
        )
        env.update(spec.env)
        env.update(spec.key_env())
        limits = ProcessLimits.for_spec(spec)
        record = {
            "name": spec.name,
            "module": manifest.ref,
            "moduleDigest": spec.module_digest,
            "port": spec.port,
            "restart": spec.restart,
            "command": command,
            "cwd": str(app),
            "env": env,
            "limits": {"addressSpaceBytes": limits.address_space_bytes, "openFiles": limits.open_files},
        }
        folder = self.service_dir(spec.name)
        data_dir.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        (folder / RUN_FILE).unlink(missing_ok=True)
        atomic_write_text(folder / SERVICE_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)
        faults.point("install", manifest.name)
        return self.status(spec.name)

    def _unpack(self, spec: ModuleSpec, *, wheelhouse: bool) -> Path:
        """The unpacked bundle; without ``wheelhouse/`` when the venv exists already (a model-only
        update), and unpacked again whole if a venv has to be built from one unpacked without it."""
        manifest = spec.manifest
        app = self.app_dir(manifest.name, manifest.version)
        marker = app / _DIGEST_MARKER
        if (
            marker.is_file()
            and marker.read_text().strip() == manifest.bundle.digest
            and (not wheelhouse or (app / _WHEELHOUSE).is_dir())
        ):
            return app
        with atomic_dir(app) as build:
            if manifest.parts is not None:  # schemaVersion 2: from the parts the agent fetched (ADR 0028)
                from edgeship.agent.runtimes.assemble import assemble_app

                assemble_app(spec.module_dir, build, manifest, wheelhouse=wheelhouse)
            else:
                unpack_bundle(spec.module_dir / manifest.bundle.path, build, wheelhouse=wheelhouse)
            (build / _DIGEST_MARKER).write_text(manifest.bundle.digest + "\n")
            faults.point("unpack", manifest.name)
        return app

    def ensure_venv(self, lock_digest: str, app: Path, module: str | None = None) -> Path:
        """The venv for ``lock_digest``, built offline from ``app``'s wheelhouse unless it exists.

        Built in a scratch folder that :meth:`sweep` removes if the builder was killed; the
        build's subprocesses die with their caller (:func:`_die_with_caller`), so a killed
        agent leaves no ``pip`` writing into it.
        """
        target = self.venv_dir(lock_digest)
        if (target / "bin" / "python").exists():
            return target
        scratch = scratch_dir(target, target.name[:12])
        try:
            self._run([self.python, "-m", "venv", "--without-pip", str(scratch)], "creating the venv")
            self._run(
                [
                    self.python, "-m", "pip", "--python", str(scratch / "bin" / "python"), "install",
                    "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--no-compile",
                    "--find-links", str(app / "wheelhouse"), "--require-hashes", "-r", str(app / "requirements.lock"),
                ],
                "installing the module's environment offline",
                fault=module,
            )
            try:
                os.rename(scratch, target)
            except OSError:
                if not (target / "bin" / "python").exists():  # not a concurrent build that won the race
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def _run(self, cmd: list[str], what: str, fault: str | None = None) -> None:
        """Run a build step that dies with this process; ``fault`` names the module of the
        ``environment`` fault point, reached while the step runs."""
        try:
            with subprocess.Popen(
                [self.python, "-c", _DIE_WITH_CALLER, str(os.getpid()), *cmd],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ) as step:
                if fault is not None:
                    faults.point("environment", fault)
                try:
                    stdout, stderr = step.communicate(timeout=_PIP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    step.kill()
                    step.communicate()
                    raise
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeFailure(f"{what.capitalize()} failed: {exc}.") from exc
        if step.returncode != 0:
            lines = [ln for ln in (stdout + stderr).splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
            raise RuntimeFailure(f"{what.capitalize()} failed: {errors[-1].strip()}")

    # -- run --------------------------------------------------------------------
    def _service(self, name: str) -> dict[str, Any]:
        record = _read_json(self.service_dir(name) / SERVICE_FILE)
        if record is None:
            raise UnknownServiceError(f"No service {name} is installed here; see 'edgeship service list'.")
        return record

    def start(self, name: str) -> ModuleStatus:
        self._service(name)
        current = self.status(name)
        if current.state in ("running", "backoff"):
            return current
        folder = self.service_dir(name)
        (folder / RUN_FILE).unlink(missing_ok=True)
        cmd = [self.python, "-m", "edgeship.agent.runtimes.supervisor", str(folder)]
        with (folder / LOG_FILE).open("ab") as log:
            try:
                launcher = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=_START_TIMEOUT, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RuntimeFailure(f"Could not start the supervisor of service {name}: {exc}.") from exc
        if launcher.returncode != 0:
            raise RuntimeFailure(
                f"The supervisor of service {name} failed to start; see 'edgeship service logs {name}'."
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if (folder / RUN_FILE).exists():
                faults.point("start", str(self._service(name)["module"]).partition(":")[0])
                return self.status(name)
            time.sleep(0.01)  # the supervisor writes run.json within tens of ms; this is on every update's path
        raise RuntimeFailure(f"The supervisor of service {name} did not report within {_START_TIMEOUT:g} s.")

    def stop(self, name: str, timeout: float = 10.0) -> ModuleStatus:
        self._service(name)
        run = _read_json(self.service_dir(name) / RUN_FILE) or {}
        supervisor = self._alive(run, "supervisorPid", "supervisorStart")
        child = self._alive(run, "pid", "pidStart")
        if supervisor:
            os.kill(supervisor, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(run, "supervisorPid", "supervisorStart"):
                time.sleep(0.05)
        if self._alive(run, "supervisorPid", "supervisorStart") or self._alive(run, "pid", "pidStart"):
            # The supervisor or server ignored SIGTERM: kill both, then write the record it could not.
            for pid in (supervisor, child):
                if pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
            run.update(state="stopped", pid=None, exitCode=137, lastError=f"killed after {timeout:g} s")
            atomic_write_text(self.service_dir(name) / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")
        return self.status(name)

    def remove(self, name: str) -> None:
        self.stop(name)
        shutil.rmtree(self.service_dir(name), ignore_errors=True)

    # -- observe ----------------------------------------------------------------
    @staticmethod
    def _alive(run: dict[str, Any], pid_key: str, start_key: str) -> int | None:
        """The pid if that very process (same start time) still runs, else None."""
        pid, started = run.get(pid_key), run.get(start_key)
        if not isinstance(pid, int) or started is None:
            return None
        return pid if process_start_time(pid) == started else None

    def _maybe_status(self, name: str) -> ModuleStatus | None:
        try:
            return self.status(name)
        except UnknownServiceError:
            return None

    def status(self, name: str) -> ModuleStatus:
        record = self._service(name)
        run = _read_json(self.service_dir(name) / RUN_FILE)
        module, port = str(record["module"]), int(record["port"])
        if run is None:
            return ModuleStatus(name, module, "stopped", port)
        reported = run.get("state")
        state: ModuleState = reported if reported in ("running", "stopped", "failed", "backoff") else "failed"
        pid = self._alive(run, "pid", "pidStart") if state == "running" else None
        error = run.get("lastError")
        if state in ("running", "backoff") and not self._alive(run, "supervisorPid", "supervisorStart"):
            state = "failed"
            error = "the supervisor is gone (killed, or the machine restarted); start the service again"
        elif state == "running" and pid is None:
            state = "backoff"  # between the server's exit and the supervisor noticing it
        return ModuleStatus(
            name,
            module,
            state,
            port,
            pid=pid,
            exit_code=run.get("exitCode"),
            restart_count=int(run.get("restartCount", 0)),
            last_error=error,
        )

    def list(self) -> builtins.list[ModuleStatus]:
        run_dir = self.state_dir / "run"
        names = sorted(p.name for p in run_dir.iterdir() if (p / SERVICE_FILE).is_file()) if run_dir.is_dir() else []
        return [self.status(n) for n in names]

    def logs(self, name: str, tail: int = 100) -> str:
        self._service(name)
        path = self.service_dir(name) / LOG_FILE
        if not path.exists():
            return ""
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * max(tail, 1) - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-tail:]) + ("\n" if lines else "") if tail > 0 else ""

    def wait_healthy(self, name: str, timeout: float = 60.0) -> ModuleStatus:
        return wait_until_healthy(self, name, timeout)

    def sweep(self) -> builtins.list[Path]:
        """Scratch of killed builds: venvs, unpacked bundles, and temp files of service records."""
        removed = sweep_scratch(self.state_dir / "venvs")
        modules = self.state_dir / "modules"
        for version in modules.glob("*/*") if modules.is_dir() else []:
            removed += sweep_scratch(version)
        run = self.state_dir / "run"
        for folder in run.iterdir() if run.is_dir() else []:
            removed += sweep_scratch(folder)  # a running supervisor's own temp file is kept (its pid lives)
        return removed
