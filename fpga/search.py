"""The budget search: which quantization settings to try, in what order, and when to give up.

Pure policy over two injected functions, so it is tested with fakes and no
onnxruntime: ``evaluate(method, excluded) -> drop`` quantizes and measures one
trial; ``rank(method) -> [(node, gain), ...]`` measures per-node sensitivity (how
much the drop shrinks when only that node stays in float).

Order: the requested calibration method, then the others; if none fits, the
best method with the most sensitive nodes left in float, one more at a time,
until the drop is within budget or ``max_excluded`` nodes are excluded. Each node
left in float is work the FPGA hands back to the host, so the search stops at the
first fit rather than the best drop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeship.errors import AccuracyBudgetError

__all__ = ["SearchResult", "Trial", "method_order", "search"]


@dataclass(frozen=True)
class Trial:
    """One quantization tried: its method, the nodes kept in float, and the measured drop."""

    method: str
    excluded: tuple[str, ...]
    drop: float

    def to_json(self) -> dict[str, object]:
        return {"method": self.method, "excluded_nodes": list(self.excluded), "accuracy_drop": self.drop}


@dataclass(frozen=True)
class SearchResult:
    """The first trial within budget, and every trial made to get there."""

    chosen: Trial
    trials: list[Trial] = field(default_factory=list)


def method_order(first: str, methods: Sequence[str]) -> list[str]:
    """``first``, then the other methods in their usual order."""
    return [first, *(m for m in methods if m != first)]


def search(
    *,
    first_method: str,
    methods: Sequence[str],
    budget: float,
    evaluate: Callable[[str, tuple[str, ...]], float],
    rank: Callable[[str], list[tuple[str, float]]],
    max_excluded: int,
    try_other_methods: bool = True,
) -> SearchResult:
    """Run the policy; raise AccuracyBudgetError listing every trial when nothing fits."""
    trials: list[Trial] = []

    def attempt(method: str, excluded: tuple[str, ...]) -> Trial | None:
        trial = Trial(method, excluded, evaluate(method, excluded))
        trials.append(trial)
        return trial if trial.drop <= budget else None

    order = method_order(first_method, methods) if try_other_methods else [first_method]
    for method in order:
        if (hit := attempt(method, ())) is not None:
            return SearchResult(hit, trials)
    best = min(trials, key=lambda t: t.drop).method
    ranked = [node for node, _ in sorted(rank(best), key=lambda item: -item[1])]
    excluded: tuple[str, ...] = ()
    for node in ranked[:max_excluded]:
        excluded = (*excluded, node)
        if (hit := attempt(best, excluded)) is not None:
            return SearchResult(hit, trials)
    raise AccuracyBudgetError(
        f"No setting kept the accuracy drop within {budget * 100:.2f} points: the best of {len(trials)} trials "
        f"lost {min(t.drop for t in trials) * 100:.2f} (tried {', '.join(order)}, then up to {len(excluded)} nodes "
        "in float); raise --max-accuracy-drop or give more representative calibration data.",
        {"trials": [t.to_json() for t in trials]},
    )
