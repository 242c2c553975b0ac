"""Telemetry: scrape each module's ``/metrics``, sample process CPU and memory, queue on disk, send in batches."""

from __future__ import annotations

from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.scrape import MetricsDelta, ModuleMetrics, parse_metrics, quantile

__all__ = ["MetricsDelta", "ModuleMetrics", "TelemetryQueue", "parse_metrics", "quantile"]
