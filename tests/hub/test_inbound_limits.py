"""The inbound gate and drop counter (``edgeship.hub.bridge.limits``) on a stepped clock: pure decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeship.hub.bridge.limits import (
    MAX_TRACKED_DEVICES,
    ChannelLimit,
    DropCounter,
    InboundGate,
    InboundLimits,
)


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def _admitted(gate: InboundGate, device: str, channel: str, size: int, n: int) -> int:
    return sum(gate.admit(device, channel, size) is None for _ in range(n))


def test_a_device_gets_its_burst_then_its_rate_and_other_devices_are_untouched() -> None:
    clock = Clock()
    gate = InboundGate(InboundLimits(telemetry=ChannelLimit(max_bytes=1000, rate=5.0, burst=20)), clock)
    assert _admitted(gate, "flood", "telemetry", 100, 1000) == 20
    assert gate.admit("flood", "telemetry", 100) == "rate"
    assert _admitted(gate, "calm", "telemetry", 100, 3) == 3
    clock.now += 1.0  # five tokens back
    assert _admitted(gate, "flood", "telemetry", 100, 1000) == 5
    assert _admitted(gate, "flood", "reported", 100, 1) == 1, "each channel has its own bucket"


def test_the_agents_backlog_drain_is_never_rate_limited() -> None:
    """The agent sends one batch per 0.2 s at most (agent/daemon.py _SEND_POLL), one in flight."""
    module = {"requests": 120, "errors": 0, "latencyMs": {"p50": 3.1, "p95": 7.9, "p99": 12.0}}
    sample = {"time": "2026-01-01T00:00:00Z", "seq": 10_000, "cpuPercent": 12.5, "memoryBytes": 73400320,
              "modules": {f"module-{n}": module for n in range(7)}}
    batch = {"schemaVersion": 1, "deviceId": "dev-1", "dropped": 0, "samples": [sample] * 100}
    size = len(json.dumps(batch, separators=(",", ":")))
    clock = Clock()
    gate = InboundGate(InboundLimits(), clock)
    for _ in range(100):  # the agent's default backlog: 10,000 samples, here of 7 modules each
        assert gate.admit("dev-1", "telemetry", size) is None
        gate.release("dev-1", size)
        clock.now += 0.2
    clock.now += 30
    assert gate.admit("dev-1", "telemetry", size) is None, "and the next batch, 30 s later"


def test_bytes_are_limited_as_well_as_messages() -> None:
    clock = Clock()
    limit = ChannelLimit(max_bytes=1000, rate=100.0, burst=100, byte_rate=100.0, byte_burst=2000)
    gate = InboundGate(InboundLimits(telemetry=limit, message_overhead=0), clock)
    assert _admitted(gate, "dev-1", "telemetry", 1000, 5) == 2
    assert gate.admit("dev-1", "telemetry", 1000) == "byte-rate"
    clock.now += 10.0  # 1000 byte tokens back
    assert gate.admit("dev-1", "telemetry", 1000) is None
    assert gate.admit("dev-1", "telemetry", 1000) == "byte-rate"


def test_an_oversized_message_is_dropped_without_taking_a_token() -> None:
    gate = InboundGate(InboundLimits(online=ChannelLimit(max_bytes=16, rate=1.0, burst=1)), Clock())
    assert gate.admit("dev-1", "online", 17) == "too-large"
    assert gate.admit("dev-1", "online", 1) is None


def test_one_device_holds_at_most_its_share_of_the_queue_until_the_worker_releases() -> None:
    limits = InboundLimits(device_queue_bytes=10_000, message_overhead=0,
                           telemetry=ChannelLimit(max_bytes=5000, rate=float("inf"), burst=1))
    gate = InboundGate(limits, Clock())
    assert _admitted(gate, "flood", "telemetry", 4000, 10) == 2
    assert gate.admit("flood", "telemetry", 4000) == "device-share"
    assert gate.admit("calm", "telemetry", 4000) is None
    gate.release("flood", 4000)
    assert gate.admit("flood", "telemetry", 4000) is None
    assert gate.queued_bytes == 12_000


def test_the_byte_budget_refuses_what_would_exceed_it_whoever_sends() -> None:
    limits = InboundLimits(queue_bytes=1000, message_overhead=100,
                           reported=ChannelLimit(max_bytes=1000, rate=float("inf"), burst=1))
    gate = InboundGate(limits, Clock())
    assert [gate.admit(f"dev-{n}", "reported", 200) for n in range(4)] == [None, None, None, "queue-full"]
    assert gate.queued_bytes == 900 and gate.peak_bytes == 900


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3000), st.booleans()), max_size=300))
def test_the_charged_bytes_never_exceed_the_budget(steps: list[tuple[int, int, bool]]) -> None:
    limits = InboundLimits(queue_bytes=20_000, device_queue_bytes=6000,
                           telemetry=ChannelLimit(max_bytes=2500, rate=float("inf"), burst=1))
    gate = InboundGate(limits, Clock())
    held: list[tuple[str, int]] = []
    for device, size, release in steps:
        if release and held:
            gate.release(*held.pop(0))
        elif gate.admit(f"dev-{device}", "telemetry", size) is None:
            held.append((f"dev-{device}", size))
        assert gate.queued_bytes == sum(gate.cost(s) for _, s in held) <= limits.queue_bytes
        assert all(sum(gate.cost(s) for d, s in held if d == dev) <= limits.device_queue_bytes for dev, _ in held)


def test_a_fleet_of_10000_devices_reporting_at_once_fits_the_default_budget() -> None:
    """What the hub receives on subscribe: every device's retained report (2 KB: a large one) and online flag."""
    gate = InboundGate(InboundLimits(), Clock())
    admitted = sum(gate.admit(f"dev-{n:05d}", "reported", 2048) is None for n in range(10_000))
    admitted += sum(gate.admit(f"dev-{n:05d}", "online", 1) is None for n in range(10_000))
    assert admitted == 20_000, "nothing is released meanwhile: the worker may not have run at all"
    assert gate.queued_bytes < InboundLimits().queue_bytes / 2


def test_idle_buckets_are_forgotten_once_full_again() -> None:
    clock = Clock()
    gate = InboundGate(InboundLimits(), clock)
    for n in range(100):
        gate.admit(f"dev-{n}", "reported", 10)
    assert gate.prune() == 0
    clock.now += 60.0  # 10 tokens at 0.5 per second: full after 2 s
    assert gate.prune() == 100


def test_drops_make_one_summary_line_per_interval_naming_the_worst_devices_first() -> None:
    clock = Clock()
    drops = DropCounter(60.0, clock)
    assert drops.summary() is None
    for _ in range(3900):
        drops.count("flood", "telemetry", "rate")
    drops.count("dev-2", "reported", "schema", "Reported state field status.code: Input should be a valid integer")
    for n in range(12):
        drops.count(f"other-{n:02d}", "online", "malformed", "payload must be '1' or '0',\ngot b'x'")
    clock.now += 30
    assert drops.summary() is None, "not before the interval is over"
    clock.now += 30
    line = drops.summary()
    assert line is not None and "\n" not in line
    assert line.startswith("dropped 3913 inbound device message(s) in the last 60 s (3913 since the hub started): "
                           "'flood' 3900 (telemetry rate 3900), ")
    assert "and 4 more device(s)" in line and "status.code: Input should be a valid integer" in line
    assert "telemetry rate: over the device's message rate" in line
    assert drops.summary() is None
    clock.now += 61
    assert drops.summary() is None, "an interval without drops logs nothing"
    assert drops.by_reason[("telemetry", "rate")] == 3900 and drops.by_device["flood"] == 3900


def test_drop_counts_per_device_are_bounded() -> None:
    drops = DropCounter(60.0, Clock())
    for n in range(MAX_TRACKED_DEVICES + 5):
        drops.count(f"d{n}", "online", "rate")
    assert len(drops.by_device) == MAX_TRACKED_DEVICES + 1 and drops.by_device["(other)"] == 5


def test_the_public_surface_resolves() -> None:
    import importlib

    for name in ("edgeship.hub.bridge", "edgeship.hub.bridge.limits", "edgeship.hub.bridge.subscriber",
                 "edgeship.reported"):
        module = importlib.import_module(name)
        assert all(hasattr(module, member) for member in module.__all__), name
