"""The budget-search policy on fake trials: order of methods, exclusion by sensitivity, giving up."""

from __future__ import annotations

import pytest

from edgeship.errors import AccuracyBudgetError
from edgeship.fpga.search import search

METHODS = ("minmax", "entropy", "percentile")


def run(drops: dict[tuple[str, tuple[str, ...]], float], gains: list[tuple[str, float]], budget: float = 0.01):
    calls: list[tuple[str, tuple[str, ...]]] = []

    def evaluate(method: str, excluded: tuple[str, ...]) -> float:
        calls.append((method, excluded))
        return drops.get((method, excluded), 0.5)

    result = search(
        first_method="minmax", methods=METHODS, budget=budget, evaluate=evaluate, rank=lambda _m: gains, max_excluded=3
    )
    return result, calls


def test_first_method_within_budget_is_taken_without_other_trials() -> None:
    result, calls = run({("minmax", ()): 0.0}, [])
    assert result.chosen.method == "minmax" and calls == [("minmax", ())]


def test_next_calibration_method_is_tried_before_excluding_nodes() -> None:
    result, calls = run({("minmax", ()): 0.05, ("entropy", ()): 0.005}, [])
    assert result.chosen.method == "entropy"
    assert calls == [("minmax", ()), ("entropy", ())]


def test_most_sensitive_nodes_are_excluded_one_at_a_time_from_the_best_method() -> None:
    drops = {
        ("minmax", ()): 0.05,
        ("entropy", ()): 0.03,
        ("percentile", ()): 0.04,
        ("entropy", ("conv2",)): 0.02,
        ("entropy", ("conv2", "fc")): 0.0,
    }
    result, calls = run(drops, [("fc", 0.01), ("conv1", 0.0), ("conv2", 0.02)])
    assert result.chosen.excluded == ("conv2", "fc")
    assert calls[3:] == [("entropy", ("conv2",)), ("entropy", ("conv2", "fc"))]


def test_nothing_fits_raises_with_every_trial() -> None:
    with pytest.raises(AccuracyBudgetError, match=r"No setting kept the accuracy drop within 1\.00 points") as info:
        run({}, [("a", 0.1), ("b", 0.05)])
    assert len(info.value.report["trials"]) == 5  # type: ignore[arg-type]
