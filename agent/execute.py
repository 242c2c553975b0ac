"""The executor: carries out the planner's commands with the downloader, the verifier and a runtime.

The only place where a :class:`~edgeship.agent.decide.plan.Command` meets I/O. It
keeps the agent's state (``agent.state``) in step with the runtime:

- ``check_space``: refuse the update when the disk cannot hold what is missing plus
  ``min_free_bytes`` (``agent/fetch/space.py``);
- ``download``: the blob into the cache (bounded by its signed size, a minimum rate and
  a deadline; resumed; digest-checked); for a schemaVersion 2 module, the parts its
  runtime needs and the part cache lacks (``agent/fetch/parts.py``, ADR 0028). A download
  stopped by :attr:`RuntimeExecutor.cancel`
  (newer desired state arrived) raises :class:`~edgeship.agent.decide.runner.Superseded`;
- ``verify``: lay out ``modules/<service>/`` exactly as the packager signed it
  (``module.json`` is the manifest payload from the accepted document, the envelope,
  the bundle and image archive at the manifest's paths), then ``verify_module_dir``;
- ``install``: record the service (phase ``installing``) *then* install it, so a kill
  in between leaves a recorded orphan that the next plan removes;
- ``start_candidate``/``health_check``/``restart``/``stop``/``remove`` to the runtime;
- ``switch``: make the candidate the module's active slot (see ports below).

Ports (ADR 0010): a module without ``settings.port`` gets a free port from the
configured range for each slot, and its reported port changes at each update
(blue/green without a proxy). A module with a fixed ``settings.port`` whose old slot
holds that port installs its candidate on a temporary port from the range, is
health-checked there, and at ``switch`` the old slot is stopped and the candidate is
re-installed and restarted on the fixed port (a short gap, but a candidate is never
switched to without having been healthy); if that fails the old slot is started again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from edgeship.agent import faults
from edgeship.agent.decide.accept import AcceptedDocument
from edgeship.agent.decide.plan import (
    CheckSpace,
    Command,
    Download,
    HealthCheck,
    Install,
    Remove,
    Restart,
    StartCandidate,
    Stop,
    Switch,
    Verify,
)
from edgeship.agent.decide.runner import Superseded
from edgeship.agent.fetch.bounded import Cancel
from edgeship.agent.fetch.download import BlobCache, CancelledError
from edgeship.agent.fetch.parts import PartCache
from edgeship.agent.fetch.space import check_space
from edgeship.agent.runtimes.base import (
    ModuleRuntime,
    ModuleSpec,
    UnknownServiceError,
    health_poll_delay,
    probe_health,
)
from edgeship.agent.state.store import ServiceRecord, StateStore
from edgeship.errors import ManifestError, RuntimeFailure
from edgeship.fsutil import atomic_dir, sweep_scratch
from edgeship.modules.plain import ENVELOPE_FILE, MANIFEST_FILE, ModuleManifest, Part, parse_manifest
from edgeship.signing import TrustRoot

__all__ = ["RuntimeExecutor", "port_is_free"]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class RuntimeExecutor:
    """Executes commands for the document in :attr:`document` (set by the reconcile loop before a run)."""

    def __init__(
        self,
        runtime: ModuleRuntime,
        state: StateStore,
        blobs: BlobCache,
        trust_root: TrustRoot,
        modules_dir: Path,
        *,
        port_range: tuple[int, int],
        health_timeout: float,
        min_free_bytes: int = 0,
        cancel: Cancel | None = None,
        log: Callable[[str], None] = lambda _line: None,
        parts: PartCache | None = None,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.blobs = blobs
        # schemaVersion 2 modules' parts, beside the blob cache unless given (ADR 0028)
        self.parts = parts or PartCache(BlobCache(blobs.root.parent / "parts", blobs.hub_url, limits=blobs.limits))
        self.trust_root = trust_root
        self.modules_dir = Path(modules_dir)
        self.port_range = port_range
        self.health_timeout = health_timeout
        self.min_free_bytes = min_free_bytes  # bytes an update must leave free on the data disk
        self.cancel = cancel or Cancel()  # stops a download in progress when newer desired state arrives
        self.document: AcceptedDocument | None = None  # the reconcile loop sets it before each run
        self._log = log

    def execute(self, command: Command) -> None:
        reuse = " (reusing its environment)" if isinstance(command, Install) and command.reuse_env else ""
        self._log(f"{command.kind} {command.service}{reuse}")
        began = time.monotonic()
        try:
            self._execute(command)
        finally:
            self._log(f"{command.kind} {command.service} took {(time.monotonic() - began) * 1000:.0f} ms")

    def _execute(self, command: Command) -> None:
        match command:
            case CheckSpace():
                self._check_space(command)
            case Download():
                progress = (lambda _bytes: faults.point("download", command.module)) if faults.armed() else None
                try:
                    if command.artifact == "parts":
                        self._fetch_parts(command, progress)
                    else:
                        self.blobs.fetch(
                            command.url, command.digest, command.size, cancel=self.cancel, progress=progress
                        )
                except CancelledError as exc:
                    raise Superseded(str(exc)) from exc
            case Verify():
                self._verify(command)
            case Install():
                self._install(command)
            case StartCandidate():
                self.runtime.start(command.service)
            case HealthCheck():
                self._health_check(command.service)
            case Switch():
                self._switch(command)
            case Stop():
                with contextlib.suppress(UnknownServiceError):
                    self.runtime.stop(command.service)
                faults.point("stop", command.module)
            case Remove():
                with contextlib.suppress(UnknownServiceError):
                    self.runtime.remove(command.service)
                faults.point("remove", command.module)
                self.forget(command.service)
            case Restart():
                self._set_phase(command.service, "yielded", "installed")  # one try: a slot that cannot start
                self.runtime.start(command.service)  # is left to the update, not retried before it
            case _:
                raise RuntimeFailure(f"The agent cannot execute a {command.kind!r} command; upgrade the agent.")

    def forget(self, service: str) -> None:
        """The agent lets go of ``service``: its record, its verified module folder, then the parts
        no installed or desired module needs any more."""
        self.state.drop_service(service)
        shutil.rmtree(self.modules_dir / service, ignore_errors=True)
        self.parts.collect(self._parts_in_use())

    # -- parts (schemaVersion 2, ADR 0028) -----------------------------------------
    def needed_parts(self, manifest: ModuleManifest) -> list[Part]:
        """The parts the runtime installs ``manifest`` from (its ``needed_parts``, else the process set)."""
        if manifest.parts is None:
            return []
        choose = getattr(self.runtime, "needed_parts", None)
        return list(choose(manifest)) if choose is not None else manifest.parts.for_process()

    def _parts_in_use(self) -> set[str]:
        """Digests of the parts of every installed module (its verified folder) and of the accepted document."""
        manifests = list(self.document.manifests.values()) if self.document is not None else []
        for service in self.state.state.services:
            try:
                manifests.append(parse_manifest((self.module_dir(service) / MANIFEST_FILE).read_bytes()))
            except (OSError, ManifestError):
                continue
        return {p.digest for m in manifests if m.parts is not None for p in m.parts.all()}

    def _fetch_parts(self, command: Download, progress: Callable[[int], None] | None) -> None:
        manifest = self._entry(command.module).manifests[command.module]
        wanted = self.needed_parts(manifest)
        self.parts.make_room(wanted, self._parts_in_use())
        self.parts.fetch(command.url, wanted, cancel=self.cancel, progress=progress)

    def sweep(self) -> list[Path]:
        """At start, before anything is built: delete what a killed predecessor left half-made.

        Scratch folders and temp files of atomic writes (here, in the state folder and in the
        runtime's folders) whose writer is gone, and module folders of services the agent has
        no record of (a kill between ``verify`` and ``install``'s record). Recorded services,
        blobs and resumable ``.part`` files stay: the next plan decides about those.
        """
        removed = sweep_scratch(self.modules_dir) + sweep_scratch(self.state.root)
        recorded = self.state.state.services
        if self.modules_dir.is_dir():
            for folder in self.modules_dir.iterdir():
                if folder.is_dir() and not folder.name.startswith(".") and folder.name not in recorded:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
        return removed + self.runtime.sweep()

    # -- helpers ----------------------------------------------------------------
    def _entry(self, module: str) -> AcceptedDocument:
        if self.document is None or module not in self.document.manifests:
            raise RuntimeFailure(f"Module {module!r} is not in the accepted document; nothing to install.")
        return self.document

    def module_dir(self, service: str) -> Path:
        return self.modules_dir / service

    def _check_space(self, command: CheckSpace) -> None:
        root = self.blobs.root
        root.mkdir(parents=True, exist_ok=True)
        manifest = self.document.manifests.get(command.module) if self.document is not None else None
        if manifest is not None and manifest.parts is not None:
            download = self.parts.missing_bytes(self.needed_parts(manifest))
        else:
            download = sum(self.blobs.missing_bytes(digest, size) for digest, size in command.blobs)
        check_space(
            command.service,
            download=download,
            unpack=command.unpack,
            free=shutil.disk_usage(root).free,
            margin=self.min_free_bytes,
            where=str(root.parent),
        )

    def _verify(self, command: Verify) -> None:
        from edgeship.modules.verify import verify_module_dir

        accepted = self._entry(command.module)
        manifest = accepted.manifests[command.module]
        payload = accepted.manifest_bytes[command.module]
        if "sha256:" + hashlib.sha256(payload).hexdigest() != command.module_digest:
            raise ManifestError(f"Module {command.module!r} changed between planning and verifying; retrying.")
        entry = accepted.document.modules[command.module]
        if manifest.parts is not None:
            self._verify_parts(command, manifest, payload, entry.module)
            return
        artifacts = {manifest.bundle.path: manifest.bundle.digest}
        if manifest.image is not None and manifest.image.archive is not None and entry.blobs.image is not None:
            artifacts[manifest.image.archive.path] = manifest.image.archive.digest
        target = self.module_dir(command.service)
        with atomic_dir(target) as build:
            (build / MANIFEST_FILE).write_bytes(payload)
            (build / ENVELOPE_FILE).write_text(json.dumps(entry.module, sort_keys=True))
            for rel, digest in artifacts.items():
                dest = build / rel
                if dest.resolve().parent != build.resolve() and build.resolve() not in dest.resolve().parents:
                    raise ManifestError(f"Artifact path {rel!r} of module {command.module!r} leaves its folder.")
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = self.blobs.path_for(digest)
                try:
                    os.link(source, dest)  # same file system: no copy; blobs are never written in place
                except OSError:
                    shutil.copyfile(source, dest)
            faults.point("verify", command.module)
            verified = verify_module_dir(build, self.trust_root, digest_of=self.blobs.digest_of)
            if verified.manifest != manifest:
                raise ManifestError(f"Module {command.module!r} verified as a different manifest; refusing it.")

    def _verify_parts(self, command: Verify, manifest: ModuleManifest, payload: bytes, envelope: object) -> None:
        """A version 2 module's folder: the manifest, the envelope and ``parts/<hex>`` linked from the part cache."""
        from edgeship.modules.verify import PARTS_DIR, verify_parts_dir

        assert manifest.parts is not None
        with atomic_dir(self.module_dir(command.service)) as build:
            (build / MANIFEST_FILE).write_bytes(payload)
            (build / ENVELOPE_FILE).write_text(json.dumps(envelope, sort_keys=True))
            (build / PARTS_DIR).mkdir()
            for part in manifest.parts.all():
                source = self.parts.path_for(part.digest)
                if not source.is_file():
                    continue  # not needed by this runtime (the runtime refuses to install without one it needs)
                dest = build / PARTS_DIR / part.digest.removeprefix("sha256:")
                try:
                    os.link(source, dest)  # parts are never written in place
                except OSError:
                    shutil.copyfile(source, dest)
            faults.point("verify", command.module)
            verified = verify_parts_dir(build, self.trust_root, digest_of=self.parts.digest_of)
            if verified.manifest != manifest:
                raise ManifestError(f"Module {command.module!r} verified as a different manifest; refusing it.")

    def _taken_ports(self, except_service: str) -> set[int]:
        return {r.port for r in self.state.state.services.values() if r.port and r.service != except_service}

    def _allocate_port(self, service: str) -> int:
        taken = self._taken_ports(service)
        first, last = self.port_range
        for port in range(first, last + 1):
            if port not in taken and port_is_free(port):
                return port
        raise RuntimeFailure(
            f"No free port in the agent's port_range {first}-{last} for {service}; widen port_range in agent.toml."
        )

    def _install(self, command: Install) -> None:
        accepted = self._entry(command.module)
        manifest = accepted.manifests[command.module]
        settings = accepted.document.modules[command.module].settings
        wanted = settings.port
        port = wanted if wanted is not None and wanted not in self._taken_ports(command.service) else None
        port = port or self._allocate_port(command.service)
        record = ServiceRecord(
            service=command.service,
            module=command.module,
            version=manifest.version,
            module_digest=command.module_digest,
            lock_digest=command.lock_digest,
            port=port,
        )
        self.state.put_service(record)  # before install: a kill from here on leaves a removable orphan
        spec = ModuleSpec(
            name=command.service,
            module_dir=self.module_dir(command.service),
            manifest=manifest,
            port=port,
            restart=settings.restart_policy,
        )
        self.runtime.install(spec)
        self.state.put_service(ServiceRecord(**{**record.__dict__, "phase": "installed"}))

    def _health_check(self, service: str) -> None:
        """Healthy = answers its probes within ``health_timeout`` without having crashed once.

        ``runtime.wait_healthy`` waits through ``backoff`` (the restart policy may bring the
        server back); a *candidate* that exited even once is not one to switch to, so this
        gives up at the first exit instead of at the timeout.
        """
        began = time.monotonic()
        deadline = began + self.health_timeout
        while True:
            status = self.runtime.status(service)
            faults.point("health", status.module.partition(":")[0])
            crashed = status.state in ("failed", "stopped", "backoff") or status.restart_count > 0
            if not crashed and status.state == "running" and probe_health(status.port):
                return
            if crashed or time.monotonic() > deadline:
                why = (
                    f"it exited (state {status.state}, exit code {status.exit_code})"
                    if crashed
                    else f"it did not answer on port {status.port} within {self.health_timeout:g} s"
                )
                tail = self.runtime.logs(service, tail=15).strip()
                raise RuntimeFailure(
                    f"Service {service} ({status.module}) is not healthy: {why}. Last log lines:\n{tail or '(none)'}"
                )
            time.sleep(health_poll_delay(time.monotonic() - began))

    def _switch(self, command: Switch) -> None:
        accepted = self._entry(command.module)
        wanted = accepted.document.modules[command.module].settings.port
        record = self.state.state.services.get(command.service)
        if record is None:
            raise RuntimeFailure(f"Candidate {command.service} is not recorded; it cannot become active.")
        if wanted is not None and record.port != wanted:
            self._move_to_port(command, record, wanted)
        self.state.set_active(command.module, command.service)
        faults.point("switch", command.module)

    def _move_to_port(self, command: Switch, record: ServiceRecord, port: int) -> None:
        """Fixed port held by the old slot: stop it, restart the healthy candidate on the port."""
        accepted = self._entry(command.module)
        settings = accepted.document.modules[command.module].settings
        if command.previous is not None:
            self._set_phase(command.previous, "installed", "yielded")  # a kill from here on: restarted first
            with contextlib.suppress(UnknownServiceError):
                self.runtime.stop(command.previous)
            faults.point("move", command.module)
        try:
            self.runtime.stop(command.service)
            self.state.put_service(ServiceRecord(**{**record.__dict__, "port": port}))
            spec = ModuleSpec(
                name=command.service,
                module_dir=self.module_dir(command.service),
                manifest=accepted.manifests[command.module],
                port=port,
                restart=settings.restart_policy,
            )
            self.runtime.install(spec)
            self.runtime.start(command.service)
            self._health_check(command.service)
        except Exception:
            with contextlib.suppress(Exception):
                self.runtime.stop(command.service)
            if command.previous is not None:
                with contextlib.suppress(Exception):
                    self.runtime.start(command.previous)
                    self._set_phase(command.previous, "yielded", "installed")
            raise

    def _set_phase(self, service: str, was: str, phase: str) -> None:
        record = self.state.state.services.get(service)
        if record is not None and record.phase == was:
            self.state.put_service(ServiceRecord(**{**record.__dict__, "phase": phase}))
