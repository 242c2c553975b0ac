"""The device page's charts from telemetry batches: one series per module version, rates from the samples' times."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from edgeship.hub.store import TelemetryRecord
from edgeship.hub.ui.views import charts

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def _sample(seq: int, second: int, modules: dict[str, Any], cpu: float = 10.0) -> dict[str, Any]:
    return {"time": f"2026-12-05T12:00:{second:02d}Z", "seq": seq, "cpuPercent": cpu, "memoryBytes": 64 * 2**20,
            "modules": modules}


def _digits(version: int, requests: int, server: int, p50: float, p99: float) -> dict[str, Any]:
    return {"version": version, "requests": requests, "errors": server + 1, "serverErrors": server, "clientErrors": 1,
            "latencyMs": {"p50": p50, "p95": p99, "p99": p99}}


def test_rates_errors_and_latency_per_module_version_from_batches_in_any_order() -> None:
    older = TelemetryRecord("dev-1", T0, {"schemaVersion": 2, "deviceId": "dev-1", "samples": [
        _sample(1, 0, {"digits": _digits(1, 5, 0, 2.0, 9.0)}),
        _sample(2, 10, {"digits": _digits(1, 20, 2, 3.0, 12.0)}),
    ]})
    newer = TelemetryRecord("dev-1", T0, {"schemaVersion": 2, "deviceId": "dev-1", "samples": [
        _sample(2, 10, {"digits": _digits(1, 20, 2, 3.0, 12.0)}),  # re-sent: counted once
        _sample(3, 20, {"digits": _digits(2, 0, 0, 0.0, 0.0)}),
        _sample(4, 25, {"digits": _digits(2, 50, 0, 1.0, 4.0)}, cpu=55.5),
    ]})
    by_key = {c.key: c for c in charts([newer, older])}
    rps, errors, latency = by_key["rps"], by_key["errors"], by_key["latency"]
    assert rps.x == [T0.timestamp() + s for s in (0, 10, 20, 25)]
    assert dict(rps.series) == {"digits v1": [None, 2.0, None, None], "digits v2": [None, None, None, 10.0]}
    assert dict(errors.series) == {"digits v1": [0.0, 0.1, None, None], "digits v2": [None, None, None, 0.0]}
    assert dict(latency.series)["digits v1 p99"] == [9.0, 12.0, None, None]
    assert dict(latency.series)["digits v2 p50"] == [None, None, None, 1.0]  # no requests: no latency point
    assert by_key["cpu"].series == [("device", [10.0, 10.0, 10.0, 55.5])]
    assert by_key["memory"].series == [("device", [64.0] * 4)]
    assert rps.points == 2 and rps.to_json()["series"][0]["label"] == "digits v1"


def test_samples_without_a_readable_time_or_modules_are_left_out() -> None:
    record = TelemetryRecord("dev-1", T0, {"samples": [{"time": "yesterday", "seq": 1}, "not a sample",
                                                       _sample(2, 5, {})]})
    by_key = {c.key: c for c in charts([record])}
    assert by_key["rps"].x == [T0.timestamp() + 5] and by_key["rps"].series == []
    assert by_key["cpu"].points == 1
    assert all(c.points == 0 for c in charts([]))
