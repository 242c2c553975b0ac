"""A deployment's rollout policy: waves, how a wave advances, and when the rollout aborts.

The option names are the ones users and scripts type (issue 14):
``--waves 1,10%,50%,100%`` or ``--exponential BASE,FACTOR``, ``--spread-by tags.site``,
``--soak 5m``, ``--advance-percent 95``, ``--approve-each-wave``, ``--wave-timeout 30m``,
``--abort-percent P --abort-min N --abort-on failed,refused,timed-out``. The same
policy comes from REST or a file as a mapping with the camelCase keys of
:meth:`RolloutPolicy.to_dict` (``waves``, ``exponential``, ``spreadBy``, ``soak``,
``advancePercent``, ``approveEachWave``, ``waveTimeout``, ``abortPercent``,
``abortMin``, ``abortOn``, ``gates``).

Without abort options a rollout uses a careful default, as the issue asks: abort on
the first *failed*, *refused* or *unhealthy* (a health gate breached) device
(``abortPercent`` 0, ``abortMin`` 1);
*timed-out* devices (offline ones) are reported but do not abort unless listed.

Plain data and parsing only: no clock, no database (``docs/rollouts.md``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeship.errors import InputError
from edgeship.hub.rollouts.gates import Gate, parse_gates

__all__ = [
    "DEFAULT_ABORT_ON",
    "FAILURE_KINDS",
    "FailureKind",
    "RolloutPolicy",
    "WaveSize",
    "parse_duration",
    "parse_waves",
]

FailureKind = Literal["failed", "refused", "timed-out", "unhealthy"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("failed", "refused", "timed-out", "unhealthy")
DEFAULT_ABORT_ON: tuple[FailureKind, ...] = ("failed", "refused", "unhealthy")
MAX_WAVES = 100  # waves in one policy; an exponential policy stops growing at the fleet's size
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TAG_PATH = re.compile(r"^tags\.[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class WaveSize:
    """One cumulative wave size: a device count, or a percentage of the targeted devices."""

    value: float
    percent: bool

    def resolve(self, targeted: int) -> int:
        """How many devices the rollout has reached once this wave is out (at least 1 of a non-empty fleet)."""
        if not self.percent:
            return min(int(self.value), targeted)
        count = int(-(-self.value * targeted // 100))  # ceiling: 1% of 50 devices is 1, not 0
        return min(max(count, 1 if targeted else 0), targeted)

    def text(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


def parse_duration(text: str, option: str) -> float:
    """Seconds in ``30s``, ``5m``, ``2h`` or ``1d``; a clear :class:`InputError` otherwise."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise InputError(f"{option} {text!r} is not a duration; write a number and a unit: 30s, 5m, 2h or 1d.")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_waves(text: str) -> tuple[WaveSize, ...]:
    """``1,10%,50%,100%``: cumulative sizes, growing, each a count or a percentage up to 100%."""
    sizes: list[WaveSize] = []
    for raw in str(text).split(","):
        item = raw.strip()
        try:
            size = WaveSize(float(item[:-1]), True) if item.endswith("%") else WaveSize(float(int(item)), False)
        except ValueError:
            raise InputError(
                f"--waves item {item!r} is neither a device count (10) nor a percentage (10%); "
                "write cumulative sizes such as 1,10%,50%,100%."
            ) from None
        if size.value <= 0 or (size.percent and size.value > 100):
            raise InputError(f"--waves item {item!r} must be above 0 (and at most 100%).")
        sizes.append(size)
    if not sizes or len(sizes) > MAX_WAVES:
        raise InputError(f"--waves needs 1 to {MAX_WAVES} sizes, not {len(sizes)}.")
    for values in ([s.value for s in sizes if s.percent], [s.value for s in sizes if not s.percent]):
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise InputError(f"--waves {text!r} must grow: each size is cumulative (1,10%,50%,100%).")
    return tuple(sizes)


@dataclass(frozen=True)
class RolloutPolicy:
    """How a deployment reaches its devices; times in seconds, shares in percent."""

    waves: tuple[WaveSize, ...] = ()
    exponential: tuple[int, float] | None = None  # (devices in the first wave, growth factor)
    spread_by: str | None = None  # a tag path, "tags.site": each wave spread over its values
    soak: float = 0.0  # seconds a wave's devices must keep running the release after applying it
    advance_percent: float = 100.0  # share of a wave that must have succeeded to advance
    approve_each_wave: bool = False
    wave_timeout: float = 1800.0  # seconds a wave may take before it waits for approval, with the reason
    abort_percent: float = 0.0  # abort when more than this share of executed devices failed ...
    abort_min: int = 1  # ... once at least this many devices have executed
    abort_on: tuple[FailureKind, ...] = field(default=DEFAULT_ABORT_ON)
    gates: tuple[Gate, ...] = ()  # health gates over the soak (gates.py); a breach makes a device unhealthy

    def __post_init__(self) -> None:
        if self.waves and self.exponential:
            raise InputError("Give either --waves or --exponential, not both.")
        if self.exponential is not None:
            base, factor = self.exponential
            if base < 1 or factor <= 1:
                raise InputError("--exponential BASE,FACTOR needs BASE >= 1 device and FACTOR > 1 (e.g. 2,2).")
        if self.spread_by is not None and not _TAG_PATH.match(self.spread_by):
            raise InputError(f"--spread-by {self.spread_by!r} must name a tag, such as tags.site.")
        for name, value in (("--advance-percent", self.advance_percent), ("--abort-percent", self.abort_percent)):
            if not 0 <= value <= 100:
                raise InputError(f"{name} {value:g} must be between 0 and 100.")
        if self.soak < 0 or self.wave_timeout <= 0:
            raise InputError("--soak must be 0 or more and --wave-timeout above 0.")
        if self.abort_min < 1:
            raise InputError("--abort-min must be at least 1 device.")
        unknown = [k for k in self.abort_on if k not in FAILURE_KINDS]
        if unknown or not self.abort_on:
            raise InputError(f"--abort-on takes one or more of {', '.join(FAILURE_KINDS)}; got {unknown or 'none'}.")

    @property
    def staged(self) -> bool:
        """True when the deployment goes out in waves (else: every targeted device at once)."""
        return bool(self.waves or self.exponential)

    def sizes(self, targeted: int) -> list[int]:
        """Cumulative device counts per wave for ``targeted`` devices; the last wave reaches them all."""
        if not self.staged:
            return [targeted]
        if self.waves:
            counts = [w.resolve(targeted) for w in self.waves]
        else:
            assert self.exponential is not None
            base, factor = self.exponential
            counts, size, total = [], float(base), 0
            while total < targeted and len(counts) < MAX_WAVES:
                total = min(targeted, total + max(1, int(size)))
                counts.append(total)
                size *= factor
        out: list[int] = []
        for count in counts:
            if not out or count > out[-1]:
                out.append(count)
        if not out or out[-1] < targeted:
            out.append(targeted)  # waves that stop short of the fleet end with everyone
        return out

    def to_dict(self) -> dict[str, Any]:
        """The policy as stored and as REST and files spell it."""
        data: dict[str, Any] = {
            "soak": self.soak, "advancePercent": self.advance_percent, "approveEachWave": self.approve_each_wave,
            "waveTimeout": self.wave_timeout, "abortPercent": self.abort_percent, "abortMin": self.abort_min,
            "abortOn": list(self.abort_on),
        }
        if self.waves:
            data["waves"] = ",".join(w.text() for w in self.waves)
        if self.exponential:
            data["exponential"] = [self.exponential[0], self.exponential[1]]
        if self.spread_by:
            data["spreadBy"] = self.spread_by
        if self.gates:
            data["gates"] = [g.text for g in self.gates]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPolicy:
        """Read a policy from REST or a file; unknown keys and wrong types are refused by name."""
        if not isinstance(data, Mapping):
            raise InputError("A rollout policy must be a mapping of options (waves, soak, abortPercent, ...).")
        known = {"waves", "exponential", "spreadBy", "soak", "advancePercent", "approveEachWave", "waveTimeout",
                 "abortPercent", "abortMin", "abortOn", "gates"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"Rollout policy has unknown keys {unknown}; use {sorted(known)}.")
        try:
            exponential = data.get("exponential")
            return cls(
                waves=parse_waves(data["waves"]) if data.get("waves") is not None else (),
                exponential=(int(exponential[0]), float(exponential[1])) if exponential is not None else None,
                spread_by=data.get("spreadBy"),
                soak=_seconds(data.get("soak", 0), "soak"),
                advance_percent=float(data.get("advancePercent", 100.0)),
                approve_each_wave=_flag(data.get("approveEachWave", False), "approveEachWave"),
                wave_timeout=_seconds(data.get("waveTimeout", 1800), "waveTimeout"),
                abort_percent=float(data.get("abortPercent", 0.0)),
                abort_min=int(data.get("abortMin", 1)),
                abort_on=tuple(data.get("abortOn", DEFAULT_ABORT_ON)),
                gates=parse_gates(_texts(data.get("gates", []), "gates")),
            )
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise InputError(f"Rollout policy is not valid ({exc}); see 'edgeship deployment create --help'.") from exc


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"Rollout policy {key} must be seconds or a duration such as 5m.")
    return float(value) if isinstance(value, (int, float)) else parse_duration(str(value), key)


def _texts(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"Rollout policy {key} must be a list of gates such as [\"error_rate <= 1%\"].")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"Rollout policy {key} must be true or false.")
    return value
