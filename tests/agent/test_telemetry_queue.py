"""The on-disk telemetry queue (order, bound, drop count, ack) and the metrics arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.scrape import MetricsDelta, parse_metrics, quantile


def test_samples_come_out_in_order_and_leave_only_when_acknowledged(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    seqs = [queue.push({"n": i}) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    batch = queue.peek(3)
    assert batch is not None
    assert [s["n"] for s in batch.samples] == [0, 1, 2]
    assert [s["seq"] for s in batch.samples] == seqs[:3]
    assert queue.peek(3).samples == batch.samples  # type: ignore[union-attr]  # not acked: same again
    queue.ack(batch)
    assert [s["n"] for s in queue.peek(10).samples] == [3, 4]  # type: ignore[union-attr]


def test_the_queue_survives_a_reopen_and_never_reuses_a_seq(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    first = queue.push({"n": 1})
    queue.ack(queue.peek())  # type: ignore[arg-type]
    queue.push({"n": 2})
    queue.close()
    again = TelemetryQueue(tmp_path / "t.db")
    batch = again.peek()
    assert batch is not None and [s["n"] for s in batch.samples] == [2]
    assert again.push({"n": 3}) > first + 1


def test_a_full_queue_drops_the_oldest_and_reports_the_count_until_acked(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db", limit=3)
    for i in range(7):
        queue.push({"n": i})
    assert len(queue) == 3
    batch = queue.peek()
    assert batch is not None
    assert [s["n"] for s in batch.samples] == [4, 5, 6]
    assert batch.dropped == 4
    queue.push({"n": 7})  # drops one more after the peek
    queue.ack(batch)
    assert queue.dropped == 1


METRICS = """
# TYPE edgeship_scoring_requests counter
edgeship_scoring_requests_total{endpoint="/score",status="200"} 90.0
edgeship_scoring_requests_total{endpoint="/score",status="422"} 10.0
edgeship_scoring_requests_total{endpoint="/",status="200"} 40.0
edgeship_scoring_requests_total{endpoint="/metrics",status="200"} 7.0
# TYPE edgeship_scoring_errors counter
edgeship_scoring_errors_total{endpoint="/score",status="422"} 10.0
# TYPE edgeship_scoring_request_duration_seconds histogram
edgeship_scoring_request_duration_seconds_bucket{endpoint="/score",le="0.001"} 50.0
edgeship_scoring_request_duration_seconds_bucket{endpoint="/score",le="0.01"} 90.0
edgeship_scoring_request_duration_seconds_bucket{endpoint="/score",le="0.1"} 100.0
edgeship_scoring_request_duration_seconds_bucket{endpoint="/score",le="+Inf"} 100.0
edgeship_scoring_request_duration_seconds_count{endpoint="/score"} 100.0
edgeship_scoring_request_duration_seconds_sum{endpoint="/score"} 0.5
edgeship_scoring_request_duration_seconds_bucket{endpoint="/",le="0.001"} 40.0
edgeship_scoring_request_duration_seconds_bucket{endpoint="/",le="+Inf"} 40.0
"""


def test_scoring_metrics_become_counts_and_interpolated_percentiles() -> None:
    metrics = parse_metrics(METRICS)  # health probes on "/" and scrapes of /metrics are not counted
    assert (metrics.requests, metrics.errors) == (100.0, 10.0)
    assert quantile(0.5, metrics.buckets) == pytest.approx(0.001)
    assert quantile(0.95, metrics.buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    delta = MetricsDelta.between(None, metrics).to_dict()
    assert delta["requests"] == 100 and delta["errors"] == 10
    assert delta["latencyMs"] == {"p50": 1.0, "p95": 55.0, "p99": pytest.approx(91.0)}


def test_a_second_scrape_reports_only_what_happened_since() -> None:
    before = parse_metrics(METRICS)
    after = parse_metrics(METRICS.replace(" 90.0", " 190.0").replace('le="0.001"} 50.0', 'le="0.001"} 150.0')
                          .replace('le="0.01"} 90.0', 'le="0.01"} 190.0').replace('le="0.1"} 100.0', 'le="0.1"} 200.0')
                          .replace('le="+Inf"} 100.0', 'le="+Inf"} 200.0'))
    delta = MetricsDelta.between(before, after)
    assert delta.requests == 100 and delta.errors == 0
    assert delta.p50_ms == pytest.approx(0.5)
    restarted = MetricsDelta.between(after, before)  # counters went down: the server restarted
    assert restarted.requests == 100


def test_no_requests_means_zero_latency() -> None:
    assert MetricsDelta.between(None, parse_metrics("")).to_dict()["latencyMs"] == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


BY_STATUS = """
# TYPE edgeship_scoring_errors counter
edgeship_scoring_errors_total{endpoint="/score",status="404"} 3.0
edgeship_scoring_errors_total{endpoint="/score",status="422"} 4.0
edgeship_scoring_errors_total{endpoint="/score",status="500"} 2.0
edgeship_scoring_errors_total{endpoint="/v2/models/{name}/infer",status="503"} 1.0
edgeship_scoring_errors_total{endpoint="/",status="500"} 50.0
# TYPE edgeship_scoring_requests counter
edgeship_scoring_requests_total{endpoint="/score",status="200"} 90.0
"""


def test_a_404_is_a_client_error_and_a_500_a_server_error() -> None:
    metrics = parse_metrics(BY_STATUS)  # the liveness probe's 500s on "/" are not the module's work
    assert (metrics.server_errors, metrics.client_errors, metrics.errors) == (3.0, 7.0, 10.0)
    delta = MetricsDelta.between(None, metrics).to_dict()
    assert (delta["errors"], delta["serverErrors"], delta["clientErrors"]) == (10, 3, 7)


def test_the_error_split_is_per_interval_too() -> None:
    before = parse_metrics(BY_STATUS)
    after = parse_metrics(BY_STATUS.replace('status="500"} 2.0', 'status="500"} 12.0')
                          .replace('status="404"} 3.0', 'status="404"} 4.0').replace(" 90.0", " 190.0"))
    delta = MetricsDelta.between(before, after)
    assert (delta.requests, delta.errors, delta.server_errors, delta.client_errors) == (100, 11, 10, 1)


def test_an_error_without_a_readable_status_counts_as_a_server_error() -> None:
    metrics = parse_metrics('edgeship_scoring_errors_total{endpoint="/score",status="oops"} 2.0\n'
                            'edgeship_scoring_errors_total{endpoint="/score"} 1.0\n')
    assert (metrics.server_errors, metrics.client_errors) == (3.0, 0.0)
