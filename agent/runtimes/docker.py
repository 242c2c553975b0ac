"""``DockerRuntime``: a module as a container made from its signed image archive.

The Docker engine is the supervisor here: it keeps the container's state, applies
the restart policy and holds the logs, so this runtime keeps no state files. It
finds its containers by name (``edgeship-<service>``) and labels:

- ``io.edgeship.service``: the service name;
- ``io.edgeship.module``: ``name:version``;
- ``io.edgeship.module.digest``: sha256 of the module's ``module.json``.

``install`` loads ``image.tar`` only when the engine lacks the manifest's image id
(the id is the image config digest, so a matching id is the very image that was
signed), then creates the container; ``start``/``stop`` act on it. The ``docker``
SDK is imported only when a DockerRuntime is made: a device without Docker
installs ``edgeship[agent]``, one with Docker ``edgeship[agent,docker]``.
"""

from __future__ import annotations

import builtins
import time
from pathlib import Path
from typing import Any

from edgeship.agent import faults
from edgeship.agent.runtimes.base import (
    SERVER_PORT,
    ModuleSpec,
    ModuleState,
    ModuleStatus,
    UnknownServiceError,
    validate_service_name,
    wait_until_healthy,
)
from edgeship.errors import RuntimeFailure
from edgeship.modules.plain import ModuleManifest, Part

__all__ = ["CONTAINER_PREFIX", "LABEL_MODULE", "LABEL_MODULE_DIGEST", "LABEL_SERVICE", "DockerRuntime"]

CONTAINER_PREFIX = "edgeship-"
LABEL_SERVICE = "io.edgeship.service"
LABEL_MODULE = "io.edgeship.module"
LABEL_MODULE_DIGEST = "io.edgeship.module.digest"
LABEL_PORT = "io.edgeship.port"
_RESTART = {"always": {"Name": "always"}, "on-failure": {"Name": "on-failure"}, "never": {"Name": "no"}}
_REMOVE_TIMEOUT = 300.0  # seconds; deleting a container's layer copy on vfs is slow
_STOPPED_CODES = {0, 130, 143}  # clean exit, SIGINT, SIGTERM: how a server ends when asked to stop


DOCKER_API_TIMEOUT_S = 300  # seconds; container stop/remove on the vfs storage driver can take minutes


class DockerRuntime:
    """Runs modules as containers on the local Docker engine (``client``: a ``docker.DockerClient``)."""

    kind = "docker"

    def __init__(self, client: Any = None) -> None:
        try:
            import docker
            import docker.errors

            self._errors = docker.errors
            self.client = client or docker.from_env(timeout=DOCKER_API_TIMEOUT_S)
            self.client.ping()
        except ImportError as exc:
            raise RuntimeFailure(
                "The docker runtime needs the Docker SDK; install edgeship[docker] or use --runtime process."
            ) from exc
        except Exception as exc:  # DockerException, connection refused, permission denied on the socket
            raise RuntimeFailure(
                f"No Docker engine answers ({exc}); start dockerd or use --runtime process."
            ) from exc

    @staticmethod
    def container_name(name: str) -> str:
        return CONTAINER_PREFIX + validate_service_name(name)

    def _fail(self, what: str, exc: Exception) -> RuntimeFailure:
        detail = getattr(exc, "explanation", None) or str(exc)
        return RuntimeFailure(f"Docker could not {what}: {detail}.")

    def _container(self, name: str) -> Any:
        try:
            return self.client.containers.get(self.container_name(name))
        except self._errors.NotFound as exc:
            raise UnknownServiceError(f"No service {name} is installed here; see 'edgeship service list'.") from exc
        except self._errors.APIError as exc:
            raise self._fail(f"inspect service {name}", exc) from exc

    # -- install ----------------------------------------------------------------
    def _has_image(self, image_id: str) -> bool:
        try:
            self.client.images.get(image_id)
            return True
        except self._errors.ImageNotFound:
            return False
        except self._errors.APIError as exc:
            raise self._fail(f"look up image {image_id[:19]}", exc) from exc

    def _layers_present(self, manifest: ModuleManifest) -> int:
        """How many of the image's leading layers the engine has already (as the chain of some image)."""
        from edgeship.agent.runtimes.assemble import present_layers

        assert manifest.parts is not None and manifest.parts.image is not None
        try:
            images = self.client.images.list(all=True)
        except self._errors.APIError as exc:
            raise self._fail("list images", exc) from exc
        known = [list(i.attrs.get("RootFS", {}).get("Layers") or []) for i in images]
        return present_layers([layer.digest for layer in manifest.parts.image.layers], known)

    def needed_parts(self, manifest: ModuleManifest) -> list[Part]:
        """The image parts to fetch: none when the engine has the image, else the config and
        every layer above the longest chain of them the engine has (ADR 0028)."""
        parts = manifest.parts
        if parts is None or parts.image is None or manifest.image is None:
            return []
        if self._has_image(manifest.image.id):
            return []
        return [parts.image.config, *parts.image.layers[self._layers_present(manifest):]]

    def _load_parts(self, spec: ModuleSpec) -> None:
        """``docker load`` an archive assembled from the fetched layer parts, without the layers the engine has."""
        import tempfile

        from edgeship.agent.runtimes.assemble import write_load_archive

        manifest = spec.manifest
        skip = self._layers_present(manifest)
        with tempfile.TemporaryFile(dir=spec.module_dir) as archive:
            write_load_archive(spec.module_dir, manifest, archive, skip)
            archive.seek(0)
            try:
                self.client.images.load(archive)
            except self._errors.APIError as exc:
                raise self._fail(f"load the image of {manifest.ref} from its parts", exc) from exc

    def _ensure_image(self, spec: ModuleSpec) -> str:
        image = spec.manifest.image
        if image is not None and spec.manifest.parts is not None and spec.manifest.parts.image is not None:
            if not self._has_image(image.id):
                self._load_parts(spec)
                if not self._has_image(image.id):
                    raise RuntimeFailure(
                        f"The parts of {spec.manifest.ref} did not load as image {image.id[:19]}; re-package it."
                    )
                faults.point("environment", spec.manifest.name)
            return image.id
        if image is None or image.archive is None:
            raise RuntimeFailure(
                f"Module {spec.manifest.ref} has no image archive; "
                "re-package it with an image or use --runtime process."
            )
        try:
            self.client.images.get(image.id)
            return image.id
        except self._errors.ImageNotFound:
            pass
        except self._errors.APIError as exc:
            raise self._fail(f"look up image {image.id[:19]}", exc) from exc
        try:
            with (spec.module_dir / image.archive.path).open("rb") as archive:
                loaded = self.client.images.load(archive)
        except (self._errors.APIError, OSError) as exc:
            raise self._fail(f"load {image.archive.path} of {spec.manifest.ref}", exc) from exc
        if image.id not in {i.id for i in loaded}:
            raise RuntimeFailure(
                f"{image.archive.path} of {spec.manifest.ref} did not contain image {image.id[:19]}; re-package it."
            )
        faults.point("environment", spec.manifest.name)
        return image.id

    def install(self, spec: ModuleSpec) -> ModuleStatus:
        image_id = self._ensure_image(spec)
        try:
            old = self._container(spec.name)
        except UnknownServiceError:
            old = None
        if old is not None:
            if old.status in ("running", "restarting"):
                raise RuntimeFailure(
                    f"Service {spec.name} is running {old.labels.get(LABEL_MODULE)}; stop it before installing again."
                )
            self._remove_container(old, spec.name)
        res = spec.manifest.resources
        cpus = res.cpu_limit or res.cpu
        memory_gb = res.memory_gb_limit or res.memory_gb
        port = spec.manifest.ports[0] if spec.manifest.ports else SERVER_PORT
        options: dict[str, Any] = {
            "name": self.container_name(spec.name),
            "detach": True,
            "ports": {f"{port}/tcp": ("127.0.0.1", spec.port)},
            "labels": {
                LABEL_SERVICE: spec.name,
                LABEL_MODULE: spec.manifest.ref,
                LABEL_MODULE_DIGEST: spec.module_digest,
                LABEL_PORT: str(spec.port),
            },
            "environment": {**spec.env, **spec.key_env()},
            "restart_policy": _RESTART[spec.restart],
        }
        if cpus:
            options["nano_cpus"] = int(cpus * 1e9)
        if memory_gb:
            options["mem_limit"] = int(memory_gb * 2**30)
        try:
            self.client.containers.create(image_id, **options)
        except self._errors.APIError as exc:
            raise self._fail(f"create the container for service {spec.name}", exc) from exc
        faults.point("install", spec.manifest.name)
        return self.status(spec.name)

    # -- run --------------------------------------------------------------------
    def start(self, name: str) -> ModuleStatus:
        container = self._container(name)
        try:
            container.start()
        except self._errors.APIError as exc:
            raise self._fail(f"start service {name}", exc) from exc
        faults.point("start", container.labels.get(LABEL_MODULE, "").partition(":")[0])
        return self.status(name)

    def stop(self, name: str, timeout: float = 10.0) -> ModuleStatus:
        container = self._container(name)
        try:
            container.stop(timeout=max(1, int(timeout)))
        except self._errors.APIError as exc:
            raise self._fail(f"stop service {name}", exc) from exc
        return self.status(name)

    def _remove_container(self, container: Any, name: str) -> None:
        """Remove and wait until the name is free (removal is slow on some storage drivers, e.g. vfs)."""
        try:
            container.remove(force=True)
        except self._errors.NotFound:
            return
        except self._errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress; wait for it below
                raise self._fail(f"remove the container of service {name}", exc) from exc
        deadline = time.monotonic() + _REMOVE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.client.containers.get(container.id)
            except self._errors.NotFound:
                return
            time.sleep(0.2)
        raise RuntimeFailure(
            f"Docker did not finish removing the container of service {name} in {_REMOVE_TIMEOUT:g} s."
        )

    def remove(self, name: str) -> None:
        self._remove_container(self._container(name), name)

    # -- observe ----------------------------------------------------------------
    def _status_of(self, container: Any) -> ModuleStatus:
        attrs = container.attrs
        state = attrs.get("State", {})
        labels = container.labels
        code = state.get("ExitCode")
        docker_status = state.get("Status", container.status)
        error = state.get("Error") or None
        if state.get("OOMKilled"):
            error = "killed: out of memory (raise memoryInGB in the deployment config)"
        kind: ModuleState
        if docker_status == "running":
            kind = "running"
        elif docker_status == "restarting":
            kind = "backoff"
        elif docker_status == "created" or (docker_status == "exited" and code in _STOPPED_CODES and not error):
            kind = "stopped"
        else:
            kind = "failed"
            error = error or f"the scoring server exited with code {code}"
        return ModuleStatus(
            name=labels.get(LABEL_SERVICE, container.name.removeprefix(CONTAINER_PREFIX)),
            module=labels.get(LABEL_MODULE, "?"),
            state=kind,
            port=int(labels.get(LABEL_PORT, 0)),
            pid=int(state.get("Pid") or 0) or None,
            container_id=container.id,
            exit_code=code if docker_status != "created" and kind != "running" else None,
            restart_count=int(attrs.get("RestartCount", 0)),
            last_error=error,
        )

    def status(self, name: str) -> ModuleStatus:
        return self._status_of(self._container(name))

    def list(self) -> builtins.list[ModuleStatus]:
        try:
            containers = self.client.containers.list(all=True, filters={"label": LABEL_SERVICE})
        except self._errors.APIError as exc:
            raise self._fail("list containers", exc) from exc
        return sorted((self._status_of(c) for c in containers), key=lambda s: s.name)

    def logs(self, name: str, tail: int = 100) -> str:
        container = self._container(name)
        try:
            raw: bytes = container.logs(stdout=True, stderr=True, tail=max(tail, 0))
        except self._errors.APIError as exc:
            raise self._fail(f"read the logs of service {name}", exc) from exc
        return raw.decode("utf-8", "replace")

    def wait_healthy(self, name: str, timeout: float = 60.0) -> ModuleStatus:
        return wait_until_healthy(self, name, timeout)

    def sweep(self) -> builtins.list[Path]:
        """Nothing to sweep: the engine holds every half-made thing (an interrupted load leaves no image)."""
        return []
