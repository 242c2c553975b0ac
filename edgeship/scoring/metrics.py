"""Prometheus metrics per endpoint: requests, errors (status >= 400) and latency.

With several workers each process counts on its own; prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``server.py`` for every
worker before prometheus-client is imported) lets whichever worker answers
``/metrics`` report the sum over all of them.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ENV_MULTIPROC", "Metrics"]

ENV_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
# seconds; scoring calls range from sub-millisecond (small ONNX models) to seconds
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters and a histogram, with label children cached so the hot path is one dict lookup."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self._registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(ENV_MULTIPROC))
        self._requests = Counter(
            "edgeship_scoring_requests",
            "HTTP requests answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=self._registry,
        )
        self._errors = Counter(
            "edgeship_scoring_errors",
            "Requests answered with a status of 400 or more.",
            ["endpoint", "status"],
            registry=self._registry,
        )
        self._latency = Histogram(
            "edgeship_scoring_request_duration_seconds",
            "Time to answer a request.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self._registry,
        )
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:
            code = str(status)
            error = self._errors.labels(endpoint, code) if status >= 400 else None
            children = (self._requests.labels(endpoint, code), error, self._latency.labels(endpoint))
            self._children[key] = children
        children[0].inc()
        if children[1] is not None:
            children[1].inc()
        children[2].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
