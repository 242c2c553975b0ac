"""/metrics in Prometheus format: requests, errors and latency per endpoint, summed over workers."""

from __future__ import annotations

import httpx
import pytest
from conftest import SCRIPTS, Server
from prometheus_client.parser import text_string_to_metric_families


def _samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = server.client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("workers", ["1", "2"])
def test_requests_errors_and_latency_are_counted_per_endpoint(serve, workers: str) -> None:
    server = serve("-e", str(SCRIPTS / "plain.py"), "--workers", workers)
    for _ in range(3):
        with httpx.Client(base_url=server.url) as fresh:  # fresh connections reach every worker
            assert fresh.post("/score", content=b"{}").status_code == 200
    assert server.client.post("/score", content=b"boom").status_code == 500
    samples = _samples(server)
    ok = (("endpoint", "/score"), ("status", "200"))
    failed = (("endpoint", "/score"), ("status", "500"))
    assert samples[("edgeship_scoring_requests_total", ok)] == 3
    assert samples[("edgeship_scoring_requests_total", failed)] == 1
    assert samples[("edgeship_scoring_errors_total", failed)] == 1
    assert ("edgeship_scoring_errors_total", ok) not in samples
    count = samples[("edgeship_scoring_request_duration_seconds_count", (("endpoint", "/score"),))]
    assert count == 4
    assert samples[("edgeship_scoring_request_duration_seconds_sum", (("endpoint", "/score"),))] > 0
