"""Take a telemetry sample of the running modules, and send queued samples while connected.

Sampling and sending are separate: samples go to the on-disk queue whatever the
connection; :class:`TelemetrySender` publishes the oldest batch and removes it only
once the broker acknowledged it (QoS 1 PUBACK), one batch in flight at a time, so
batches arrive in order.

Each module's entry names the module ``version`` of the active service it scraped
(from the agent state, as the reported state does), so the hub can compare a release
with the version it replaced. Batches are ``schemaVersion`` 2; a sender built with
``schema_version=1`` strips the keys version 1 does not know, for a hub older than
version 2 (ADR 0024).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from edgeship.agent.runtimes import local_http
from edgeship.agent.runtimes.base import ModuleRuntime
from edgeship.agent.state.store import StateStore
from edgeship.agent.telemetry.procstat import CLOCK_TICKS, cpu_ticks, process_tree, rss_bytes
from edgeship.agent.telemetry.queue import Batch, TelemetryQueue
from edgeship.agent.telemetry.scrape import MetricsDelta, ModuleMetrics, parse_metrics
from edgeship.deployment import format_time

__all__ = ["SCHEMA_VERSIONS", "TELEMETRY_SCHEMA_VERSION", "TelemetrySampler", "TelemetrySender"]

TELEMETRY_SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
_V2_MODULE_KEYS = ("version", "serverErrors", "clientErrors")  # what a version 1 batch must not carry
BATCH_SIZE = 100  # samples per published batch
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


class Publisher(Protocol):
    def publish_telemetry(self, batch: dict[str, Any]) -> Any: ...


class TelemetrySender:
    """Publishes queued samples in order; call :meth:`pump` often (it never blocks).

    ``schema_version`` 1 sends what a hub older than telemetry version 2 accepts: the
    same samples without ``version``, ``serverErrors`` and ``clientErrors``.
    """

    def __init__(self, device_id: str, queue: TelemetryQueue, link: Publisher,
                 schema_version: int = TELEMETRY_SCHEMA_VERSION) -> None:
        if schema_version not in SCHEMA_VERSIONS:
            raise ValueError(f"telemetry schema version {schema_version} is not one of {SCHEMA_VERSIONS}")
        self.device_id = device_id
        self.queue = queue
        self.link = link
        self.schema_version = schema_version
        self._inflight: tuple[Any, Batch] | None = None

    def pump(self) -> int:
        """Ack a delivered batch and publish the next; returns the samples acknowledged now."""
        acked = 0
        if self._inflight is not None:
            info, batch = self._inflight
            if not info.is_published():
                return 0  # paho re-sends it after a reconnect (persistent session)
            self.queue.ack(batch)
            self._inflight = None
            acked = len(batch.samples)
        pending = self.queue.peek(BATCH_SIZE)
        if pending is None:
            return acked
        samples = pending.samples if self.schema_version >= 2 else [_as_v1(s) for s in pending.samples]
        message = {
            "schemaVersion": self.schema_version,
            "deviceId": self.device_id,
            "samples": samples,
            "dropped": pending.dropped,
        }
        info = self.link.publish_telemetry(message)
        if info is not None:
            self._inflight = (info, pending)
        return acked


def _as_v1(sample: dict[str, Any]) -> dict[str, Any]:
    modules = sample.get("modules")
    if not isinstance(modules, dict):
        return sample
    return {**sample, "modules": {
        name: {k: v for k, v in entry.items() if k not in _V2_MODULE_KEYS} if isinstance(entry, dict) else entry
        for name, entry in modules.items()
    }}
