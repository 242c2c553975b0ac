"""Health gates: a rollout watches the model itself, per device, over the soak (issue 15).

A gate is one line an operator types (``--gate``, or ``gates`` in REST and files)::

    error_rate <= 1%             the share of requests answered 5xx (callers' 4xx do not count)
    p99_ratio <= 1.5             p99 latency of the release / p99 of the version it replaced, same device
    restarts <= 2                restarts of the release's service (from the reported state)
    error_rate <= 1% over 5m min 50

``over D`` is the window (default: everything since the device applied the release);
``min N`` the requests the window (and, for ``p99_ratio``, the previous version's data)
must hold before the gate can judge (default :data:`DEFAULT_MIN_REQUESTS`). A device
whose data is short is *no data*: never healthy, never a breach. ``restarts`` always
has data (the report carries the count).

Pure: the engine passes what it read (``Health`` per module) and gets a verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from edgeship.errors import InputError

__all__ = ["DEFAULT_MIN_REQUESTS", "GATE_METRICS", "Gate", "Health", "Verdict", "judge", "measure", "parse_gate"]

Metric = Literal["error_rate", "p99_ratio", "restarts"]
GATE_METRICS: tuple[Metric, ...] = ("error_rate", "p99_ratio", "restarts")
DEFAULT_MIN_REQUESTS = 20  # fewer requests than this say little about a 1% error rate or a p99
MAX_GATES = 16
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op><=|<)\s*(?P<value>\d+(?:\.\d+)?)(?P<pct>%?)"
    r"(?:\s+over\s+(?P<over>\d+(?:\.\d+)?[smhd]))?(?:\s+min\s+(?P<min>\d+))?\s*$"
)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Gate:
    metric: Metric
    threshold: float  # error_rate as a fraction (1% -> 0.01); p99_ratio a ratio; restarts a count
    strict: bool = False  # "<" instead of "<="
    window: float | None = None  # seconds; None: since the device applied the release
    min_requests: int = DEFAULT_MIN_REQUESTS
    text: str = ""

    def passes(self, value: float) -> bool:
        return value < self.threshold if self.strict else value <= self.threshold


def parse_gate(text: str) -> Gate:
    """``error_rate <= 1%``, ``p99_ratio <= 1.5``, ``restarts <= 2``, with ``over 5m`` and ``min 50``."""
    match = _GATE.match(str(text))
    if not match:
        raise InputError(
            f"--gate {text!r} is not a gate; write METRIC <= VALUE [over 5m] [min 20], with METRIC one of "
            f"{', '.join(GATE_METRICS)} (e.g. \"error_rate <= 1%\", \"p99_ratio <= 1.5\", \"restarts <= 2\")."
        )
    metric, value, pct = match["metric"], float(match["value"]), bool(match["pct"])
    if metric not in GATE_METRICS:
        raise InputError(f"--gate {text!r}: unknown metric {metric!r}; use one of {', '.join(GATE_METRICS)}.")
    if metric == "error_rate":
        if not pct or value > 100:
            raise InputError(f"--gate {text!r}: write error_rate as a percentage up to 100%, such as 1%.")
        value /= 100
    elif pct:
        raise InputError(f"--gate {text!r}: only error_rate takes a percentage.")
    window = float(match["over"][:-1]) * _UNITS[match["over"][-1]] if match["over"] else None
    if window is not None and window <= 0:
        raise InputError(f"--gate {text!r}: the window after 'over' must be above 0.")
    minimum = int(match["min"]) if match["min"] else DEFAULT_MIN_REQUESTS
    if minimum < 1:
        raise InputError(f"--gate {text!r}: 'min' must be at least 1 request.")
    return Gate(metric, value, match["op"] == "<", window, minimum, " ".join(str(text).split()))


def parse_gates(texts: Iterable[str]) -> tuple[Gate, ...]:
    gates = tuple(parse_gate(t) for t in texts)
    if len(gates) > MAX_GATES:
        raise InputError(f"A rollout takes at most {MAX_GATES} gates, not {len(gates)}.")
    return gates


@dataclass(frozen=True)
class Health:
    """What the hub knows of one module of the release on one device (None: no data)."""

    requests: int = 0
    server_errors: int = 0
    p99_ms: float | None = None
    baseline_requests: int = 0  # the version it replaced, on the same device
    baseline_p99_ms: float | None = None
    restarts: int | None = None


Verdict = Literal["pass", "breach", "no-data"]


def judge(
    gates: Iterable[Gate], modules: Mapping[str, Mapping[float | None, Health]], *, soaked: bool = True,
) -> tuple[Verdict, str]:
    """Every gate over every module: ``breach`` if any breaches, else ``no-data`` if any cannot judge, else ``pass``.

    ``modules[name][window]`` is the module's health over a gate's window (None: since it applied).
    ``p99_ratio`` judges only once the device ``soaked``: a new version's first busy seconds
    (a cold cache, a loaded machine) make a p99 that says little, while a 5xx or a restart
    is a fact at once.
    """
    missing: list[str] = []
    for name, windows in sorted(modules.items()):
        for gate in gates:
            if gate.metric == "p99_ratio" and not soaked:
                continue
            value, shown = measure(gate, windows)
            if value is None:
                missing.append(f"{name}: {gate.metric}")
            elif not gate.passes(value):
                return "breach", f"{name}: {shown} breaches '{gate.text}'"
    if missing:
        return "no-data", "not enough data for " + ", ".join(missing)
    return "pass", ""


def measure(gate: Gate, windows: Mapping[float | None, Health]) -> tuple[float | None, str]:
    """The value ``gate`` judges for one module (None: too little data), and how it reads.

    ``windows`` is the module's health by window, as :func:`judge` takes it; the dashboard
    shows these values beside the thresholds (``Rollouts.inspect``).
    """
    health = windows.get(gate.window) or windows.get(None) or Health()
    if gate.metric == "restarts":
        return (None, "") if health.restarts is None else (float(health.restarts), f"{health.restarts} restarts")
    if health.requests < gate.min_requests:
        return None, ""
    if gate.metric == "error_rate":
        value = health.server_errors / health.requests
        return value, f"error_rate {100 * value:.3g}% ({health.server_errors} of {health.requests})"
    if health.baseline_requests < gate.min_requests or not health.baseline_p99_ms or health.p99_ms is None:
        return None, ""
    value = health.p99_ms / health.baseline_p99_ms
    return value, f"p99_ratio {value:.3g} ({health.p99_ms:.3g} ms vs {health.baseline_p99_ms:.3g} ms)"
