"""What the health gates measure now, per wave and module version, beside their thresholds (issue 18).

The engine judges every device on its own (:func:`~edgeship.hub.rollouts.gates.judge`);
an operator watching a wave wants the numbers behind the verdicts. For each wave with
devices running the release, each module version and each gate, :func:`summarize` counts
the devices whose value passes, breaches or is short of data (and, for ``p99_ratio``
before the soak ends, not judged yet), with the worst value (all gates are upper bounds)
and the device it came from. The values are :func:`~edgeship.hub.rollouts.gates.measure`'s,
the very numbers the engine compares. Pure: ``Rollouts.inspect`` passes what it read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from edgeship.hub.rollouts.gates import Gate, Health, measure

__all__ = ["GateValues", "format_value", "summarize"]

GateVerdict = Literal["pass", "breach", "no-data", "waiting"]


@dataclass(frozen=True)
class GateValues:
    """One gate over one module version's devices in one wave, as the engine judges them now."""

    wave: int  # 1-based
    module: str
    version: int
    gate: str  # as the operator typed it: the threshold
    metric: str
    threshold: float  # error_rate as a fraction
    devices: int  # running the release in this wave
    passing: int
    breaching: int
    no_data: int  # too few requests (or no baseline) to judge
    waiting: int  # p99_ratio of devices still soaking: not judged yet
    worst: float | None  # the highest value measured (None: nothing measured)
    worst_device: str | None
    worst_detail: str  # how the engine words the worst value ("error_rate 2% (2 of 100)")

    @property
    def verdict(self) -> GateVerdict:
        if self.breaching:
            return "breach"
        if self.no_data:
            return "no-data"
        return "waiting" if self.waiting else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "wave": self.wave, "module": self.module, "version": self.version, "gate": self.gate,
            "metric": self.metric, "threshold": self.threshold, "verdict": self.verdict, "devices": self.devices,
            "passing": self.passing, "breaching": self.breaching, "noData": self.no_data, "waiting": self.waiting,
            "worst": self.worst, "worstDevice": self.worst_device, "worstDetail": self.worst_detail,
        }


def format_value(metric: str, value: float | None) -> str:
    """A value as its gate is written: error_rate in percent, p99_ratio as a ratio, restarts as a count."""
    if value is None:
        return "—"
    if metric == "error_rate":
        return f"{100 * value:.3g}%"
    if metric == "restarts":
        return f"{value:.0f}"
    return f"{value:.3g}"


def summarize(
    gates: Sequence[Gate],
    waves: Sequence[Sequence[str]],  # the plan's devices by wave
    expected: Mapping[str, Mapping[str, int]],  # device -> module -> version the release runs there
    health: Mapping[str, Mapping[str, Mapping[float | None, Health]]],  # the devices the gates read
    applied: Mapping[str, datetime],  # device -> when it started running the release
    now: datetime,
    soak: float,
) -> tuple[GateValues, ...]:
    """Per wave (only waves with devices the gates read), module version and gate, in plan order."""
    out: list[GateValues] = []
    for index, members in enumerate(waves):
        by_version: dict[tuple[str, int], list[str]] = {}
        for device in members:
            for name, version in sorted(expected.get(device, {}).items()):
                if name in health.get(device, {}):
                    by_version.setdefault((name, version), []).append(device)
        for (name, version), devices in sorted(by_version.items()):
            for gate in gates:
                out.append(_one(gate, index + 1, name, version, devices, health, applied, now, soak))
    return tuple(out)


def _one(gate: Gate, wave: int, name: str, version: int, devices: Sequence[str],
         health: Mapping[str, Mapping[str, Mapping[float | None, Health]]], applied: Mapping[str, datetime],
         now: datetime, soak: float) -> GateValues:
    passing = breaching = no_data = waiting = 0
    worst: tuple[float, str, str] | None = None
    for device in devices:
        if gate.metric == "p99_ratio" and (now - applied[device]).total_seconds() < soak:
            waiting += 1  # as judge(): p99_ratio judges a device once it soaked
            continue
        value, detail = measure(gate, health[device][name])
        if value is None:
            no_data += 1
            continue
        if gate.passes(value):
            passing += 1
        else:
            breaching += 1
        if worst is None or value > worst[0]:
            worst = (value, device, detail)
    return GateValues(wave, name, version, gate.text, gate.metric, gate.threshold, len(devices), passing, breaching,
                      no_data, waiting, worst[0] if worst else None, worst[1] if worst else None,
                      worst[2] if worst else "")
