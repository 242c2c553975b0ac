"""Take a telemetry sample of the running modules into the on-disk queue, whatever the connection.

Sending is separate (``sender.py``). Each module's entry names the module ``version``
of the active service it scraped (from the agent state, as the reported state does),
so the hub can compare a release with the version it replaced (ADR 0024).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edgeship.agent.runtimes import local_http
from edgeship.agent.runtimes.base import ModuleRuntime
from edgeship.agent.state.store import StateStore
from edgeship.agent.telemetry.procstat import CLOCK_TICKS, cpu_ticks, process_tree, rss_bytes
from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.scrape import MetricsDelta, ModuleMetrics, parse_metrics
from edgeship.deployment import format_time

__all__ = ["TelemetrySampler"]

log = logging.getLogger("edgeship.agent")


def _get_metrics(port: int, timeout: float = 2.0) -> str | None:
    try:
        response = local_http.get(port, "/metrics", timeout=timeout)
    except local_http.LocalHTTPError as exc:
        log.debug("no metrics from port %d: %s", port, exc)
        return None
    return response.body.decode("utf-8", "replace") if response.status == 200 else None


class TelemetrySampler:
    def __init__(self, runtime: ModuleRuntime, state: StateStore, queue: TelemetryQueue,
                 now: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.state = state
        self.queue = queue
        self.now = now
        self._previous: dict[str, tuple[str, ModuleMetrics]] = {}  # module -> (service, last scrape)
        self._ticks: tuple[float, int] | None = None  # (monotonic time, total CPU ticks) of the last sample

    def sample(self) -> dict[str, Any]:
        modules: dict[str, Any] = {}
        pids: list[int] = []
        state = self.state.state
        for module, service in sorted(state.active.items()):
            try:
                status = self.runtime.status(service)
            except Exception as exc:  # a vanished service is missing from this sample, not an error
                log.debug("no telemetry from %s: %s", service, exc)
                continue
            if status.pid is not None:
                pids += process_tree(status.pid)
            text = _get_metrics(status.port) if status.state == "running" else None
            if text is None:
                continue
            try:
                metrics = parse_metrics(text)
            except ValueError:
                continue
            before = self._previous.get(module)
            delta = MetricsDelta.between(before[1] if before and before[0] == service else None, metrics)
            self._previous[module] = (service, metrics)
            record = state.services.get(service)
            modules[module] = {**({"version": record.version} if record else {}), **delta.to_dict()}
        ticks = sum(cpu_ticks(pid) for pid in pids)
        moment = time.monotonic()
        cpu = 0.0
        if self._ticks is not None and moment > self._ticks[0]:
            cpu = max(ticks - self._ticks[1], 0) / CLOCK_TICKS / (moment - self._ticks[0]) * 100.0
        self._ticks = (moment, ticks)
        sample = {
            "time": format_time(self.now()),
            "cpuPercent": round(cpu, 2),
            "memoryBytes": sum(rss_bytes(pid) for pid in pids),
            "modules": modules,
        }
        self.queue.push(sample)
        return sample
