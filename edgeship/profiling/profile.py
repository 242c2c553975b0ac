"""``profile_model``: measure a model's module under load and recommend its ``cpu`` and ``memoryInGB``.

The public entry point for ``edgeship model profile`` and for the Azure ML v1
layer's ``Model.profile``. In Docker: one container of the module's image, memory
limited to the largest candidate, measured once per cpu candidate with that CPU
limit set on it (``container.py``); with the process runtime: one unlimited run of
a freshly started server. Each measurement is a warm-up, then a fixed duration of
closed-loop load with the samples, while the server's memory and CPU are sampled.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.errors import InputError
from edgeship.packager.image import DEFAULT_BASE_IMAGE as PACKAGE_BASE_IMAGE
from edgeship.profiling.load import LoadSettings, LoadStats, run_load
from edgeship.profiling.monitor import ResourceUse
from edgeship.profiling.recommend import GIB, Recommendation, RunFigures, recommend
from edgeship.profiling.samples import read_samples
from edgeship.profiling.target import ProcessTarget, ProfilingError
from edgeship.workspace import Workspace

__all__ = ["PROFILE_PROPERTY", "MeasuredRun", "ProfileResult", "profile_model", "stored_profile"]

PROFILE_PROPERTY = "edgeship.profile"  # the model property a profile is stored under (compact JSON)
DEFAULT_CPU_CANDIDATES = (0.5, 1.0, 2.0)
DEFAULT_MEMORY_CANDIDATES = (0.5, 1.0, 2.0)
DEFAULT_BASE_IMAGE = PACKAGE_BASE_IMAGE  # as edgeship package's --base-image
RUNTIMES = ("auto", "docker", "process")
PROCESS_NOTE = (
    "The process runtime cannot enforce a CPU limit, so no cpu is recommended: the run was unlimited and "
    "profiles memory and latency alone (a Docker runtime would enforce each candidate)."
)

StepFn = Callable[[str], None]


@dataclass(frozen=True)
class MeasuredRun:
    """One measurement: the limits it ran under, the load's figures and the resources used."""

    cpu_limit: float | None
    memory_limit_gb: float | None
    load: LoadStats
    use: ResourceUse

    def figures(self) -> RunFigures:
        rate = self.load.errors / self.load.total if self.load.total else 1.0
        return RunFigures(self.cpu_limit, self.load.percentile_ms(90), rate, self.use.peak_memory_bytes)

    def to_json(self) -> dict[str, Any]:
        load = self.load
        ok = len(load.latencies_s)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "requestedCpu": self.cpu_limit,
            "requestedMemoryInGB": self.memory_limit_gb,
            "totalQueries": load.total,
            "successQueries": ok,
            "successRate": round(ok / load.total, 4) if load.total else 0.0,
            "averageLatencyInMs": ms(load.mean_ms),
            "latencyPercentile50InMs": ms(load.percentile_ms(50)),
            "latencyPercentile90InMs": ms(load.percentile_ms(90)),
            "latencyPercentile99InMs": ms(load.percentile_ms(99)),
            "measuredQueriesPerSecond": round(load.throughput, 3),
            "concurrency": load.concurrency,
            "busyFraction": None if load.busy_fraction is None else round(load.busy_fraction, 4),
            "durationInSeconds": round(load.wall_s, 3),
            "maxUtilizedCpu": round(self.use.peak_cpu_cores, 3),
            "averageUtilizedCpu": round(self.use.mean_cpu_cores, 3),
            "maxUtilizedMemoryInGB": round(self.use.peak_memory_bytes / GIB, 4),
            "errors": list(load.error_texts),
        }


@dataclass
class ProfileResult:
    """A profile, shaped like Azure ML's ``ModelProfile.get_details()`` (camelCase keys) in :meth:`to_json`."""

    models: list[str]
    runtime: str
    cpu_limits_enforced: bool
    latency_target_ms: float
    samples: int
    runs: list[MeasuredRun]
    recommendation: Recommendation
    notes: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def recommended_cpu(self) -> float | None:
        return self.recommendation.cpu

    @property
    def recommended_memory(self) -> float | None:
        return self.recommendation.memory_gb

    # Azure ML's ModelProfile surface, so the v1 layer can hand this object back as Model.profile's result.
    @property
    def state(self) -> str:
        return "Succeeded"

    def wait_for_completion(self, show_output: bool = False) -> None:
        """A profile here is finished when it is returned (Azure's ran in the cloud)."""
        del show_output

    def get_details(self) -> dict[str, Any]:
        """The figures and recommendations, None values left out, as ``ModelProfile.get_details()``."""
        return {k: v for k, v in self.to_json().items() if v is not None}

    def serialize(self) -> dict[str, Any]:
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        runs = [r.to_json() for r in self.runs]
        headline = runs[0] if len(runs) == 1 else {}
        if self.recommendation.cpu is not None:
            headline = next(r for r in runs if r["requestedCpu"] == self.recommendation.cpu)
        return {
            "state": "Succeeded",
            "createdTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "models": self.models,
            "runtime": self.runtime,
            "cpuLimitsEnforced": self.cpu_limits_enforced,
            "latencyTargetInMs": self.latency_target_ms,
            "samples": self.samples,
            "recommendedCpu": self.recommendation.cpu,
            "recommendedMemoryInGB": self.recommendation.memory_gb,
            "recommendedCpuLatencyInMs": self.recommendation.cpu_latency_ms,
            **{k: v for k, v in headline.items() if k not in ("requestedCpu", "requestedMemoryInGB")},
            "runs": runs,
            "notes": self.notes + list(self.recommendation.notes),
        }


def _candidates(values: Sequence[float], option: str) -> tuple[float, ...]:
    if not values or len(values) > 16 or any(not 0 < v <= 1024 for v in values):
        raise InputError(f"{option} takes 1 to 16 positive numbers up to 1024, e.g. 0.5,1,2.")
    return tuple(sorted(set(values)))


def _measure(running: Any, monitor: Any, bodies: list[bytes], settings: LoadSettings, cpu: float | None,
             memory: float | None) -> MeasuredRun:
    with monitor:
        stats = run_load(running.url, bodies, settings)
    if not stats.latencies_s:
        first = stats.error_texts[0] if stats.error_texts else "no request completed"
        raise ProfilingError(f"Every request of the profile failed (first: {first}); check the samples with "
                             "'edgeship serve' and curl.")
    return MeasuredRun(cpu, memory, stats, monitor.result)


def _docker_target(
    workspace: Workspace, records: Sequence[Any], inference: Any, runtime: str, base_image: str,
    wheelhouse: Path | None, memory_gb: float, port: int | None, notes: list[str], on_step: StepFn | None,
) -> Any:
    """A :class:`DockerTarget` of the module's image, or None (with a note) when ``auto`` finds no usable Docker."""
    from edgeship.errors import PackagingError
    from edgeship.profiling.container import DockerTarget, docker_engine, module_image

    client = docker_engine()
    if client is None:
        if runtime == "docker":
            raise ProfilingError("--runtime docker needs a Docker engine and none answers; start dockerd or "
                                 "leave --runtime out to profile on the process runtime.")
        notes.append("No Docker engine answers, so the process runtime was used. " + PROCESS_NOTE)
        return None
    if on_step:
        on_step(f"building the module's image on {base_image} (reused when it exists)")
    try:
        image = module_image(client, workspace, records, inference=inference, base_image=base_image,
                             wheelhouse=wheelhouse)
    except PackagingError as exc:
        if runtime == "docker":
            raise ProfilingError(f"The module's image could not be built: {exc}") from exc
        notes.append(f"Docker answers but the module's image could not be built ({exc}), so the process runtime "
                     "was used. " + PROCESS_NOTE)
        return None
    return DockerTarget(client, image, env=dict(inference.env) if inference else {}, memory_gb=memory_gb, port=port)


def profile_model(
    workspace: Workspace,
    models: Sequence[str],
    samples: Path | Sequence[bytes],
    *,
    inference_config: Path | None = None,
    latency_target_ms: float = 100.0,
    cpu_candidates: Sequence[float] = DEFAULT_CPU_CANDIDATES,
    memory_candidates: Sequence[float] = DEFAULT_MEMORY_CANDIDATES,
    concurrency: int = 1,
    duration_s: float = 10.0,
    warmup_requests: int = 10,
    server_workers: int = 1,
    port: int | None = None,
    store: bool = True,
    runtime: str = "auto",
    base_image: str = DEFAULT_BASE_IMAGE,
    wheelhouse: Path | None = None,
    on_step: StepFn | None = None,
) -> ProfileResult:
    """Profile ``models`` (``NAME:VERSION``) served by ``inference_config``'s entry script, or without code.

    ``samples`` is a JSON-lines file of request bodies or the bodies themselves.
    Returns the measurements and the recommendation (the smallest candidate that
    meets ``latency_target_ms`` at p90); with ``store`` the result is added to every
    profiled model's properties under ``edgeship.profile``. Raises InputError for
    bad arguments and ProfilingError when the module does not start or no request
    succeeds.

    ``runtime``: ``docker`` profiles each cpu candidate, smallest first, in one
    container of the module's image (built on ``base_image``, from ``wheelhouse``
    when given) limited to that cpu and the largest memory candidate; ``process`` runs once, unlimited,
    and recommends no cpu; ``auto`` is ``docker`` when an engine answers and the
    image builds, else ``process`` with a note saying why.
    """
    from edgeship.registry import Model, parse_model_ref

    if not models:
        raise InputError("Give the model to profile with -m NAME:VERSION.")
    refs = [parse_model_ref(m, require_version=True) for m in models]
    records = [Model.get(workspace, r.name, r.version) for r in refs]
    if not 0 < latency_target_ms <= 600_000:
        raise InputError(f"--latency-target-ms {latency_target_ms:g} is out of range; give 0 to 600000 ms.")
    if not 1 <= concurrency <= 256:
        raise InputError(f"--concurrency {concurrency} is out of range; give 1 to 256 requests in flight.")
    if not 1 <= duration_s <= 3600:
        raise InputError(f"--duration {duration_s:g} is out of range; give 1 to 3600 seconds.")
    if not 0 <= warmup_requests <= 10_000:
        raise InputError(f"--warmup {warmup_requests} is out of range; give 0 to 10000 requests.")
    if runtime not in RUNTIMES:
        raise InputError(f"--runtime {runtime!r} is unknown; use one of: {', '.join(RUNTIMES)}.")
    cpus = _candidates(cpu_candidates, "--cpu")
    memories = _candidates(memory_candidates, "--memory-gb")
    bodies = read_samples(samples) if isinstance(samples, Path) else [bytes(b) for b in samples]
    if not bodies:
        raise InputError("Give at least one sample request body.")
    config = None
    if inference_config is not None:
        from edgeship.packager.config import load_inference_config

        config = load_inference_config(inference_config)
    elif len(records) != 1:
        raise InputError("Without --ic (an entry script) a module serves exactly one model; give one -m.")
    settings = LoadSettings(concurrency=concurrency, duration_s=duration_s, warmup_requests=warmup_requests)
    notes: list[str] = []
    docker = None
    if runtime != "process":
        docker = _docker_target(workspace, records, config, runtime, base_image, wheelhouse, memories[-1], port,
                                notes, on_step)
    if docker is not None:
        runs = []
        if on_step:
            on_step("starting the module's container")
        with docker.running() as running:
            for cpu in cpus:  # each cpu candidate as the container's limit, memory limited to the largest candidate
                if on_step:
                    on_step(f"{concurrency} client(s) for {duration_s:g} s in Docker at cpu {cpu:g}, "
                            f"memory {memories[-1]:g} GB")
                docker.limit_cpu(running, cpu)
                runs.append(_measure(running, docker.monitor(running), bodies, settings, cpu, memories[-1]))
        kind, enforced = "docker", True
        host = os.cpu_count() or 1
        if cpus[-1] > host:
            notes.append(f"cpu candidates above this machine's {host} CPUs were measured with {host}.")
    else:
        target = ProcessTarget(
            workspace.root, [m.id for m in records], config.entry_script if config else None,
            config.source_directory if config else None, dict(config.env) if config else {},
            server_workers=server_workers, port=port,
        )
        if on_step:
            on_step(f"{concurrency} client(s) for {duration_s:g} s on the process runtime (no limits)")
        with target.running() as running:
            runs = [_measure(running, target.monitor(running), bodies, settings, None, None)]
        kind, enforced = target.kind, False
        notes = notes or [PROCESS_NOTE]
        if cpus != DEFAULT_CPU_CANDIDATES:
            notes.append(f"The --cpu candidates {', '.join(f'{c:g}' for c in cpus)} were not measured "
                         "(no CPU limit on the process runtime).")
    result = ProfileResult(
        models=[m.id for m in records],
        runtime=kind,
        cpu_limits_enforced=enforced,
        latency_target_ms=latency_target_ms,
        samples=len(bodies),
        runs=runs,
        recommendation=recommend([r.figures() for r in runs], latency_target_ms, memories),
        notes=notes,
    )
    if store:
        text = json.dumps(result.to_json(), sort_keys=True, separators=(",", ":"))
        for model in records:
            model.add_properties({PROFILE_PROPERTY: text})
    return result


def stored_profile(workspace: Workspace, name: str, version: int) -> dict[str, Any] | None:
    """The profile stored with a model version, if it has one."""
    from edgeship.registry import Model

    text = Model.get(workspace, name, version).properties.get(PROFILE_PROPERTY)
    return None if text is None else dict(json.loads(text))
