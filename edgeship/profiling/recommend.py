"""The sizing rule, pure: the smallest candidate that meets the latency target.

A run meets the target when its 90th-percentile latency (the percentile Azure's
``ModelProfile`` reported its recommendation latency at) is at or under the
target and at most 1 % of its requests failed. CPU: the smallest ``cpu``
candidate whose run met the target, when the runtime enforced each candidate as
a limit. Memory: the smallest ``memoryInGB`` candidate at or above the highest
peak memory measured plus :data:`MEMORY_HEADROOM`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_ERROR_RATE", "MEMORY_HEADROOM", "Recommendation", "RunFigures", "recommend"]

MEMORY_HEADROOM = 0.25  # a quarter above the measured peak: garbage, request bodies larger than the samples
MAX_ERROR_RATE = 0.01
GIB = 2**30


@dataclass(frozen=True)
class RunFigures:
    """What :func:`recommend` needs of one measured run."""

    cpu_limit: float | None  # None: no limit was enforced
    p90_ms: float | None
    error_rate: float
    peak_memory_bytes: int


@dataclass(frozen=True)
class Recommendation:
    cpu: float | None
    memory_gb: float | None
    cpu_latency_ms: float | None  # p90 of the run at the recommended cpu
    notes: tuple[str, ...]


def meets(run: RunFigures, latency_target_ms: float) -> bool:
    return run.p90_ms is not None and run.p90_ms <= latency_target_ms and run.error_rate <= MAX_ERROR_RATE


def recommend(
    runs: Sequence[RunFigures], latency_target_ms: float, memory_candidates: Sequence[float]
) -> Recommendation:
    notes: list[str] = []
    cpu: float | None = None
    cpu_latency: float | None = None
    limited = sorted((r for r in runs if r.cpu_limit is not None), key=lambda r: r.cpu_limit or 0.0)
    if limited:
        meeting = [r for r in limited if meets(r, latency_target_ms)]
        if meeting:
            cpu, cpu_latency = meeting[0].cpu_limit, meeting[0].p90_ms
        else:
            best = min((r for r in limited if r.p90_ms is not None), key=lambda r: r.p90_ms or 0.0, default=None)
            where = f"; the best p90 was {best.p90_ms:.1f} ms at cpu {best.cpu_limit:g}" if best and best.p90_ms else ""
            notes.append(
                f"No cpu candidate met the {latency_target_ms:g} ms p90 target{where}: give larger candidates."
            )
    elif runs and not any(meets(r, latency_target_ms) for r in runs):
        notes.append(f"The unlimited run did not meet the {latency_target_ms:g} ms p90 target.")
    peak = max((r.peak_memory_bytes for r in runs), default=0)
    needed = peak * (1 + MEMORY_HEADROOM) / GIB
    fitting = sorted(m for m in memory_candidates if m >= needed)
    memory = fitting[0] if fitting else None
    if memory is None and runs:
        notes.append(
            f"Peak memory {peak / GIB:.3f} GB (+{MEMORY_HEADROOM:.0%} headroom) exceeds every --memory-gb candidate."
        )
    return Recommendation(cpu, memory, cpu_latency, tuple(notes))
