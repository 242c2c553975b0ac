"""Turn a scoring server's Prometheus text into per-interval numbers. Pure (the HTTP GET is the caller's).

The server (``edgeship.scoring.metrics``) exports ``edgeship_scoring_requests_total``,
``edgeship_scoring_errors_total`` (per endpoint and status) and the histogram
``edgeship_scoring_request_duration_seconds`` (per endpoint). Errors are split by their
``status`` label: 500 and above are the server's own failures (``serverErrors``, what a
release is judged by), 400-499 the callers' bad input (``clientErrors``); an error
without a readable status counts as a server error, the side a health gate should err on. Only the scoring
endpoints count (``/score`` and ``/v2/models/{name}/infer``): liveness probes, the
agent's own health checks and ``/metrics`` scrapes are not the module's work. A sample reports the
requests and errors *since the previous sample* and latency percentiles over those
requests, estimated from the bucket deltas by linear interpolation inside the
bucket, as Prometheus' ``histogram_quantile`` does. A counter that went down means
the server restarted: its new value is the delta.

The Prometheus text format is read here, sample lines only (``name{labels} value
[timestamp]``; comments skipped), not with ``prometheus_client.parser``: importing that
loads the whole client library into the agent (1.5 MiB of its idle resident set, ADR
0030). ``tests/agent/test_prometheus_text.py`` checks that both read the same samples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from edgeship.records import field, record

__all__ = ["MetricsDelta", "ModuleMetrics", "parse_metrics", "quantile", "text_samples"]

_REQUESTS = "edgeship_scoring_requests"
_ERRORS = "edgeship_scoring_errors"
_LATENCY = "edgeship_scoring_request_duration_seconds"
SCORING_ENDPOINTS = frozenset({"/score", "/v2/models/{name}/infer"})  # the server's endpoint label values


@record
class ModuleMetrics:
    """Cumulative counters of one server: requests, errors, and latency buckets ``{le seconds: count}``.

    ``errors`` is every status of 400 or more: ``server_errors + client_errors``.
    """

    requests: float = 0.0
    server_errors: float = 0.0  # status >= 500 (or unreadable)
    client_errors: float = 0.0  # status 400-499
    buckets: dict[float, float] = field(default_factory=dict)

    @property
    def errors(self) -> float:
        return self.server_errors + self.client_errors


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\}|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def text_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text exposition as ``(name, labels, value)``, in order.

    Raises ValueError on a line that is not a sample, a comment or blank.
    """
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = _NAME.match(line)
        if name is None:
            raise ValueError(f"line {number} of the metrics is not a sample: {raw[:80]!r}")
        rest = line[name.end() :].lstrip()
        labels: dict[str, str] = {}
        if rest.startswith("{"):
            rest = rest[1:].lstrip()
            while not rest.startswith("}"):
                label = _LABEL.match(rest)
                if label is None:
                    raise ValueError(f"line {number} of the metrics has malformed labels: {raw[:80]!r}")
                labels[label[1]] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], label[2])
                rest = rest[label.end() :] if label[3] != "}" else rest[label.end() - 1 :]
            rest = rest[1:]
        fields = rest.split()
        if not 1 <= len(fields) <= 2:
            raise ValueError(f"line {number} of the metrics has no value: {raw[:80]!r}")
        yield name[0], labels, float(fields[0])


def parse_metrics(text: str) -> ModuleMetrics:
    """Sum the scoring metrics over the scoring endpoints; errors by status class."""
    requests = server_errors = client_errors = 0.0
    buckets: dict[float, float] = {}
    for name, labels, value in text_samples(text):
        if labels.get("endpoint") not in SCORING_ENDPOINTS:
            continue
        if name == f"{_REQUESTS}_total":
            requests += value
        elif name == f"{_ERRORS}_total":
            if _is_client_error(labels.get("status")):
                client_errors += value
            else:
                server_errors += value
        elif name == f"{_LATENCY}_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    return ModuleMetrics(requests, server_errors, client_errors, buckets)


def _is_client_error(status: str | None) -> bool:
    try:
        return 400 <= int(status or "") < 500
    except ValueError:
        return False


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile (0..1) in seconds from cumulative buckets, or None without observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is the best estimate
            width = count - lower_count
            fraction = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


@record
class MetricsDelta:
    """What happened between two scrapes of one server; ``errors == server_errors + client_errors``."""

    requests: int
    server_errors: int
    client_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def between(cls, before: ModuleMetrics | None, after: ModuleMetrics) -> MetricsDelta:
        restarted = before is None or after.requests < before.requests
        base = ModuleMetrics() if restarted or before is None else before
        buckets = {le: max(n - base.buckets.get(le, 0.0), 0.0) for le, n in after.buckets.items()}

        def ms(q: float) -> float:
            value = quantile(q, buckets)
            return round(value * 1000.0, 3) if value is not None else 0.0

        return cls(
            requests=int(after.requests - base.requests),
            server_errors=int(max(after.server_errors - base.server_errors, 0)),
            client_errors=int(max(after.client_errors - base.client_errors, 0)),
            p50_ms=ms(0.50),
            p95_ms=ms(0.95),
            p99_ms=ms(0.99),
        )

    @property
    def errors(self) -> int:
        return self.server_errors + self.client_errors

    def to_dict(self) -> dict[str, object]:
        """The module's entry in a telemetry sample (``docs/mqtt.md``), without the ``version`` the sampler adds."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "serverErrors": self.server_errors,
            "clientErrors": self.client_errors,
            "latencyMs": {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms},
        }
