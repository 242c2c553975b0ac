"""``HealthReader``: what the health gates of a rollout say about each device running the release (issue 15).

For every device that runs the release, and every module the deployment wins there, it
reads the module version's telemetry since the device applied it (or over a gate's
``over`` window) and the version it replaced on the same device
(:class:`~edgeship.hub.store.history.TelemetryHistory`), takes the restart count from the
device's report, and asks the pure :func:`~edgeship.hub.rollouts.gates.judge`.

Queries are grouped: devices whose window starts in the same minute (the history's
bucket) share one query per module version, so a wave of 10,000 devices that applied
within a few minutes costs a few queries, not 10,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from edgeship.hub.rollouts.gates import Gate, Health, Verdict, judge

__all__ = ["DeviceHealth", "HealthReader", "HealthSource", "judged", "soaked"]

DeviceHealth = dict[str, dict[float | None, Health]]  # module -> window (None: since applied) -> health


class AggregateLike(Protocol):
    @property
    def requests(self) -> int: ...

    @property
    def server_errors(self) -> int: ...

    @property
    def p99_ms(self) -> float | None: ...


class HealthSource(Protocol):
    """The telemetry history the gates read (``edgeship.hub.store.history.TelemetryHistory``)."""

    def window(self, module: str, version: int, device_ids: Iterable[str], since: datetime,
               until: datetime | None = None) -> Mapping[str, AggregateLike]: ...

    def baseline(self, module: str, version: int, device_ids: Iterable[str]) -> Mapping[str, AggregateLike]: ...


class HealthReader:
    def __init__(self, source: HealthSource) -> None:
        self.source = source

    def verdicts(
        self,
        gates: tuple[Gate, ...],
        expected: Mapping[str, Mapping[str, int]],  # device -> module -> version the release runs there
        applied: Mapping[str, datetime],  # device -> when it first reported the release running
        reports: Mapping[str, Mapping[str, Any]],  # device -> its reported state
        now: datetime,
        soak: float = 0.0,  # seconds: p99_ratio judges a device only once it ran the release this long
    ) -> dict[str, tuple[Verdict, str]]:
        """device -> (verdict, reason) for every device in ``applied``."""
        return judged(gates, self.read(gates, expected, applied, reports, now), applied, now, soak)

    def read(
        self,
        gates: tuple[Gate, ...],
        expected: Mapping[str, Mapping[str, int]],
        applied: Mapping[str, datetime],
        reports: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> dict[str, DeviceHealth]:
        """device -> module -> window -> what the gates judge, for every device in ``applied`` (as ``verdicts``)."""
        if not gates or not applied:
            return {}
        windows = sorted({g.window for g in gates if g.metric != "restarts"}, key=lambda w: (w is not None, w or 0))
        health: dict[str, DeviceHealth] = {d: {} for d in applied}
        by_version: dict[tuple[str, int], list[str]] = {}
        for device in applied:
            for name, version in expected.get(device, {}).items():
                by_version.setdefault((name, version), []).append(device)
        for (name, version), devices in by_version.items():
            baseline = self.source.baseline(name, version, devices) if any(
                g.metric == "p99_ratio" for g in gates) else {}
            per_window: dict[float | None, dict[str, AggregateLike]] = {}
            for window in windows:
                groups: dict[datetime, list[str]] = {}
                for device in devices:
                    since = applied[device] if window is None else max(applied[device], now - timedelta(seconds=window))
                    groups.setdefault(since.replace(second=0, microsecond=0), []).append(device)
                found: dict[str, AggregateLike] = {}
                for since, members in groups.items():
                    found.update(self.source.window(name, version, members, since))
                per_window[window] = found
            for device in devices:
                restarts = _restarts(reports.get(device, {}), name)
                base = baseline.get(device)
                module = health[device][name] = {
                    window: _health(per_window[window].get(device), base, restarts) for window in windows
                } or {None: Health(restarts=restarts)}
                if None not in module:
                    module[None] = Health(restarts=restarts)
        return health


def soaked(applied: datetime, now: datetime, soak: float) -> bool:
    """Whether ``p99_ratio`` judges a device that started running the release at ``applied``."""
    return (now - applied).total_seconds() >= soak


def judged(gates: tuple[Gate, ...], health: Mapping[str, DeviceHealth], applied: Mapping[str, datetime],
           now: datetime, soak: float) -> dict[str, tuple[Verdict, str]]:
    """device -> (verdict, reason): :func:`judge` over what :meth:`HealthReader.read` returned."""
    return {device: judge(gates, modules, soaked=soaked(applied[device], now, soak))
            for device, modules in health.items()}


def _health(now: AggregateLike | None, base: AggregateLike | None, restarts: int | None) -> Health:
    return Health(
        requests=now.requests if now else 0,
        server_errors=now.server_errors if now else 0,
        p99_ms=now.p99_ms if now else None,
        baseline_requests=base.requests if base else 0,
        baseline_p99_ms=base.p99_ms if base else None,
        restarts=restarts,
    )


def _restarts(state: Mapping[str, Any], module: str) -> int | None:
    entry = (state.get("modules") or {}).get(module)
    count = entry.get("restartCount") if isinstance(entry, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None
