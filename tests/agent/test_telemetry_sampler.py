"""A telemetry sample names the module version it measured, and the sender speaks both batch versions.

The sampler scrapes a real HTTP server that answers ``/metrics`` with what the scoring
server's own :class:`~edgeship.scoring.metrics.Metrics` renders; the runtime is a stand-in
that only says where that server listens (the sampler asks a runtime nothing else).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgeship.agent.runtimes.base import ModuleStatus
from edgeship.agent.state.store import ServiceRecord, StateStore
from edgeship.agent.telemetry.confirm import StoredConfirmations
from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.sampler import TelemetrySampler
from edgeship.agent.telemetry.sender import TelemetrySender
from edgeship.hub.telemetry import parse_telemetry
from edgeship.scoring.metrics import Metrics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, int]]:
    served = Metrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = served.render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PortsRuntime:
    """Each service runs on a known port; nothing else."""

    ports: dict[str, int]

    def status(self, name: str) -> ModuleStatus:
        return ModuleStatus(name=name, module="", state="running", port=self.ports[name])


@dataclass
class Published:
    batches: list[dict[str, Any]] = field(default_factory=list)

    def publish_telemetry(self, batch: dict[str, Any]) -> Any:
        self.batches.append(batch)
        return None


def _service(state: StateStore, module: str, service: str, version: int) -> None:
    state.put_service(ServiceRecord(service=service, module=module, version=version, module_digest="sha256:m",
                                    lock_digest="sha256:l", port=1, phase="installed"))
    state.set_active(module, service)


def test_a_sample_names_the_module_version_and_splits_errors_by_status(
        tmp_path: Path, metrics: tuple[Metrics, int]) -> None:
    served, port = metrics
    state = StateStore(tmp_path / "state")
    _service(state, "digits", "digits.a", 3)
    queue = TelemetryQueue(tmp_path / "t.db")
    sampler = TelemetrySampler(PortsRuntime({"digits.a": port}), state, queue, lambda: T0)
    for status in (200, 200, 200, 404, 422, 500):
        served.observe("/score", status, 0.002)
    served.observe("/", 500, 0.001)  # a liveness probe: not the module's work

    entry = sampler.sample()["modules"]["digits"]
    assert (entry["version"], entry["requests"], entry["errors"]) == (3, 6, 3)
    assert (entry["serverErrors"], entry["clientErrors"]) == (1, 2)

    _service(state, "digits", "digits.b", 4)  # the update switched to the new version's service
    sampler.runtime = PortsRuntime({"digits.b": port})
    served.observe("/score", 503, 0.002)
    entry = sampler.sample()["modules"]["digits"]
    assert entry["version"] == 4  # a new service: its counters count from zero again
    assert (entry["requests"], entry["serverErrors"], entry["clientErrors"]) == (7, 2, 2)


def test_the_sender_sends_version_2_and_the_hub_accepts_it(tmp_path: Path, metrics: tuple[Metrics, int]) -> None:
    _, port = metrics
    state = StateStore(tmp_path / "state")
    _service(state, "digits", "digits.a", 3)
    queue = TelemetryQueue(tmp_path / "t.db")
    TelemetrySampler(PortsRuntime({"digits.a": port}), state, queue, lambda: T0).sample()
    queue.push({"time": "2026-03-01T11:59:00Z", "cpuPercent": 0.0, "memoryBytes": 0,  # queued by an older agent
                "modules": {"digits": {"requests": 1, "errors": 0, "latencyMs": {"p50": 1, "p95": 1, "p99": 1}}}})
    link = Published()
    TelemetrySender("dev-1", queue, link, StoredConfirmations()).pump()
    batch = link.batches[0]
    assert batch["schemaVersion"] == 2 and batch["samples"][0]["modules"]["digits"]["version"] == 3
    parsed = parse_telemetry(batch)
    assert [s.modules["digits"].version for s in parsed.samples] == [3, None]  # type: ignore[attr-defined]


def test_a_sender_for_an_older_hub_sends_version_1_without_the_new_keys(
        tmp_path: Path, metrics: tuple[Metrics, int]) -> None:
    served, port = metrics
    state = StateStore(tmp_path / "state")
    _service(state, "digits", "digits.a", 3)
    queue = TelemetryQueue(tmp_path / "t.db")
    served.observe("/score", 500, 0.002)
    TelemetrySampler(PortsRuntime({"digits.a": port}), state, queue, lambda: T0).sample()
    link = Published()
    TelemetrySender("dev-1", queue, link, StoredConfirmations(), schema_version=1).pump()
    batch = link.batches[0]
    assert batch["schemaVersion"] == 1
    assert set(batch["samples"][0]["modules"]["digits"]) == {"requests", "errors", "latencyMs"}
    assert batch["samples"][0]["modules"]["digits"]["errors"] == 1
    parse_telemetry(batch)  # the version 1 schema (what an older hub checks) accepts it
    assert queue.peek() is not None  # unchanged on disk: sent as version 1, still queued until acknowledged
    with pytest.raises(ValueError, match="schema version 3"):
        TelemetrySender("dev-1", queue, link, StoredConfirmations(), schema_version=3)
