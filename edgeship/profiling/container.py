"""The module under test in a Docker container, with the CPU and memory limits the engine enforces.

:func:`module_image` builds the module's image as ``edgeship package`` does
(wheelhouse, bundle, :func:`edgeship.packager.image.build_image`) once per profile
and tags it by the bundle's digest and the base image, so a second profile of the
same models, code and environment reuses the image. :class:`DockerTarget` starts
one container of it per profile with ``mem_limit``, its scoring port published on
127.0.0.1, waits until it is healthy, sets each candidate's CPU limit in turn and
removes it after. :class:`ContainerMonitor` reads the container's peak memory and CPU from
the engine's stats stream (the cgroup's figures, about one sample a second).
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeship.profiling.monitor import ResourceUse
from edgeship.profiling.target import ProfilingError, RunningTarget, free_port

__all__ = ["LABEL_PROFILE", "ContainerMonitor", "DockerTarget", "docker_engine", "module_image"]

LABEL_PROFILE = "io.edgeship.profile"  # on every container a profile starts, to find a leftover one
IMAGE_REPO = "edgeship-profile"
_SERVER_PORT = 5001  # the scoring server's port in a module image (render_dockerfile's default)
_CFS_PERIOD_US = 100_000  # the CFS period Docker's --cpus uses; the quota is cpu x period


def docker_engine() -> Any | None:
    """A connected ``docker.DockerClient``, or None when no engine answers (or the SDK is missing)."""
    from edgeship.errors import PackagingError
    from edgeship.packager.image import docker_client

    try:
        return docker_client()
    except PackagingError:
        return None


def module_image(
    client: Any,
    workspace: Any,
    models: Sequence[Any],
    *,
    inference: Any = None,
    base_image: str,
    wheelhouse: Path | None = None,
    console: Console | None = None,
) -> str:
    """The image id of the module of ``models`` (registry records) with ``inference``'s code; built if new.

    ``wheelhouse`` is a folder of wheels already made for the image's platform (else
    one is built from the workspace's wheel cache, as ``edgeship package`` does).
    """
    import docker.errors

    from edgeship.errors import PackagingError
    from edgeship.packager.bundle import build_bundle
    from edgeship.packager.image import build_image
    from edgeship.packager.wheelhouse import build_wheelhouse

    console = console or Console(stderr=True, quiet=True)
    try:  # checked first: the wheelhouse takes a while, and a profile does not pull images
        client.images.get(base_image)
    except docker.errors.ImageNotFound:
        raise PackagingError(f"the base image {base_image} is not on this machine; pull or build it, "
                             "or pass --base-image") from None
    with tempfile.TemporaryDirectory(dir=workspace.tmp_dir, prefix="profile-image-") as scratch:
        if wheelhouse is None:
            wheelhouse = Path(scratch) / "wheelhouse"
            build_wheelhouse(list(inference.requirements) if inference else [], wheelhouse,
                             cache_dir=workspace.cache_dir / "wheels", console=console)
        bundle = build_bundle(
            Path(scratch) / "bundle.tar",
            models=models,
            wheelhouse=wheelhouse,
            source_dir=inference.source_directory if inference else None,
            entry_script=inference.entry_script if inference else None,
            mtime=0,  # a fixed mtime: the same models, code and wheels give the same digest, hence the same tag
        )
        key = hashlib.sha256(f"{bundle.digest}\n{base_image}".encode()).hexdigest()[:24]
        tag = f"{IMAGE_REPO}:{key}"
        try:
            return str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ProfilingError(f"Docker could not look up image {tag}: {exc.explanation}.") from exc
        info = build_image(bundle.path, tag=tag, base_image=base_image, console=console, client=client,
                           labels={LABEL_PROFILE: ",".join(m.id for m in models)})
        return info.id


@dataclass(frozen=True)
class DockerTarget:
    """One container of ``image`` per profile, memory limited to ``memory_gb``; its CPU quota set per candidate.

    The CPU limit is the cgroup's CFS quota per 100 ms period (what ``nano_cpus``
    sets, given here as ``cpu_period``/``cpu_quota`` because only those can be
    changed on a running container): :meth:`limit_cpu` applies the next candidate
    with ``docker update`` instead of starting a new container, which on the vfs
    storage driver costs seconds to create and seconds more to remove.
    """

    client: Any
    image: str
    env: dict[str, str] = field(default_factory=dict)
    memory_gb: float | None = None
    port: int | None = None
    start_timeout_s: float = 180.0
    kind: str = "docker"

    def monitor(self, running: RunningTarget) -> ContainerMonitor:
        return ContainerMonitor(running.handle)

    def limit_cpu(self, running: RunningTarget, cpu: float) -> None:
        import docker.errors

        try:
            running.handle.update(cpu_period=_CFS_PERIOD_US, cpu_quota=max(1000, round(cpu * _CFS_PERIOD_US)))
        except docker.errors.APIError as exc:
            raise ProfilingError(f"Docker could not set the container's CPU limit to {cpu:g}: "
                                 f"{exc.explanation}.") from exc

    @contextmanager
    def running(self) -> Iterator[RunningTarget]:
        """The module's container, healthy, with no CPU limit until :meth:`limit_cpu`; removed after."""
        import docker.errors

        from edgeship.agent.runtimes.base import health_poll_delay, probe_health

        port = self.port or free_port()
        options: dict[str, Any] = {
            "detach": True,
            "ports": {f"{_SERVER_PORT}/tcp": ("127.0.0.1", port)},
            "environment": self.env,
            "labels": {LABEL_PROFILE: "1"},
            "cpu_period": _CFS_PERIOD_US,  # the quota is set per candidate; the server starts unthrottled
        }
        if self.memory_gb:
            options["mem_limit"] = int(self.memory_gb * 2**30)
        try:
            container = self.client.containers.run(self.image, **options)
        except docker.errors.APIError as exc:
            raise ProfilingError(f"Docker could not start the module's container: {exc.explanation}.") from exc
        try:
            began = time.monotonic()
            while not probe_health(port):
                container.reload()
                if container.status not in ("created", "running"):
                    state = container.attrs.get("State", {})
                    why = "out of memory" if state.get("OOMKilled") else f"code {state.get('ExitCode')}"
                    tail = container.logs(tail=5).decode("utf-8", "replace").strip().splitlines()
                    said = " / ".join(tail) or "no output"
                    raise ProfilingError(f"The module's container exited ({why}) before it was healthy: {said}")
                if time.monotonic() - began > self.start_timeout_s:
                    raise ProfilingError(
                        f"The module's container was not healthy within {self.start_timeout_s:g} s; "
                        "check init() with 'edgeship serve' and the container's logs."
                    )
                time.sleep(health_poll_delay(time.monotonic() - began))
            yield RunningTarget(f"http://127.0.0.1:{port}/score", 0, container)
        finally:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                raise ProfilingError(
                    f"Docker could not remove container {container.short_id}: {exc.explanation}; "
                    f"remove it with 'docker rm -f {container.short_id}'."
                ) from exc


def _memory_bytes(stats: dict[str, Any]) -> int:
    """The container's memory as ``docker stats`` shows it: usage less the inactive page cache."""
    memory = stats.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))  # cgroup v1, v2
    return max(0, usage - int(inactive or 0))


def _cpu_ns(stats: dict[str, Any]) -> int:
    return int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)


class ContainerMonitor:
    """``with ContainerMonitor(container) as monitor: ...`` then ``monitor.result``: stats-stream samples."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self._samples: list[tuple[float, int, int]] = []  # (monotonic s, cpu ns, memory bytes)
        self._stream: Any = None
        self._thread = threading.Thread(target=self._loop, name="profile-stats", daemon=True)
        self._stop = threading.Event()

    def _take(self, stats: dict[str, Any]) -> None:
        if stats.get("memory_stats"):  # an empty sample: the container is stopping
            self._samples.append((time.monotonic(), _cpu_ns(stats), _memory_bytes(stats)))

    def _loop(self) -> None:
        try:
            for stats in self._stream:
                if self._stop.is_set():
                    return
                self._take(stats)
        except Exception:  # the stream ends with a connection error when closed; the samples stay
            return

    def __enter__(self) -> ContainerMonitor:
        self._take(self._container.stats(stream=False, one_shot=True))  # the baseline, before the window
        self._stream = self._container.stats(stream=True, decode=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._take(self._container.stats(stream=False, one_shot=True))  # the window's end
        self._thread.join(2)  # it returns at the stream's next sample (a second), or when the container goes

    @property
    def result(self) -> ResourceUse:
        samples = sorted(self._samples)
        if len(samples) < 2:
            return ResourceUse(max((s[2] for s in samples), default=0), 0.0, 0.0)
        peak_cpu = 0.0
        for (t0, c0, _), (t1, c1, _) in itertools.pairwise(samples):
            if t1 - t0 >= 0.5:  # closer samples are the same engine reading, taken twice
                peak_cpu = max(peak_cpu, (c1 - c0) / 1e9 / (t1 - t0))
        wall = samples[-1][0] - samples[0][0]
        mean = (samples[-1][1] - samples[0][1]) / 1e9 / wall if wall > 0 else 0.0
        return ResourceUse(max(s[2] for s in samples), peak_cpu or mean, mean)
