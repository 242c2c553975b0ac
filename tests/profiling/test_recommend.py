"""The sizing rule on its own: the smallest candidate that meets the p90 target, memory with headroom."""

from __future__ import annotations

import pytest

from edgeship.profiling.load import LoadStats
from edgeship.profiling.recommend import GIB, MEMORY_HEADROOM, RunFigures, recommend


def _run(cpu: float | None, p90: float | None, errors: float = 0.0, memory_gb: float = 0.3) -> RunFigures:
    return RunFigures(cpu, p90, errors, int(memory_gb * GIB))


def test_the_smallest_cpu_meeting_the_target_wins_even_when_listed_last() -> None:
    runs = [_run(2.0, 20.0), _run(0.5, 180.0), _run(1.0, 90.0)]
    chosen = recommend(runs, 100.0, [0.5, 1.0, 2.0])
    assert chosen.cpu == 1.0 and chosen.cpu_latency_ms == 90.0 and chosen.notes == ()


def test_a_run_with_too_many_errors_does_not_meet_the_target() -> None:
    chosen = recommend([_run(0.5, 10.0, errors=0.2), _run(1.0, 50.0)], 100.0, [1.0])
    assert chosen.cpu == 1.0


def test_no_cpu_meeting_the_target_says_what_came_closest() -> None:
    chosen = recommend([_run(0.5, 300.0), _run(1.0, 150.0)], 100.0, [1.0])
    assert chosen.cpu is None
    assert chosen.notes == ("No cpu candidate met the 100 ms p90 target; the best p90 was 150.0 ms at cpu 1: "
                            "give larger candidates.",)


def test_memory_is_the_smallest_candidate_above_the_peak_with_headroom() -> None:
    peak = 0.45  # GB; with 25 % headroom 0.5625 GB is needed
    assert MEMORY_HEADROOM == 0.25
    assert recommend([_run(None, 10.0, memory_gb=peak)], 100.0, [2.0, 0.5, 1.0]).memory_gb == 1.0
    assert recommend([_run(None, 10.0, memory_gb=0.3)], 100.0, [2.0, 0.5, 1.0]).memory_gb == 0.5
    too_big = recommend([_run(None, 10.0, memory_gb=3.0)], 100.0, [0.5, 1.0, 2.0])
    assert too_big.memory_gb is None and "exceeds every --memory-gb candidate" in too_big.notes[0]


def test_without_cpu_limits_no_cpu_is_recommended() -> None:
    chosen = recommend([_run(None, 10.0)], 100.0, [1.0])
    assert chosen.cpu is None and chosen.memory_gb == 1.0 and chosen.notes == ()


def test_latency_percentiles_are_nearest_rank() -> None:
    stats = LoadStats([i / 1000 for i in range(1, 101)], errors=0, wall_s=1.0)
    got = (stats.percentile_ms(50), stats.percentile_ms(90), stats.percentile_ms(99))
    assert got == pytest.approx((50.0, 90.0, 99.0))
    assert stats.throughput == 100.0
