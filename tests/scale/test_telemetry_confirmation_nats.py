"""No telemetry sample is lost when the node leading the hub's inbound stream dies (ADR 0049 on ADR 0047's path).

A NATS cluster acknowledges an MQTT QoS 1 publish before its JetStream stream stores it: while the stream
elects a new leader, acknowledged messages are lost (``benchmarks/broker/stream_capture.py``). With the hub's
``telemetry-stored`` confirmation an agent keeps each batch until the hub stored it, and sends a copy when
none came. Real parts only: a 3-node cluster with the product's per-device users (``nats_cluster.py``,
``nats_fleet.fleet_users``), PostgreSQL, one ``edgeship hub serve --nats-inbound`` process, and
:data:`DEVICES` devices, each the agent's own link, queue, confirmations and sender (``telemetry_agents.py``).

The stream is made before the hub starts, so its leader is known: the hub and the devices use the other two
nodes (the leader is last in each device's address list), so their publishes go on while the stream's new
leader is elected and the test is about the stream's loss, not a device's failover (``test_broker_node_kill``
covers that). Samples are pushed steadily; the leader is SIGKILLed mid-stream; sampling goes on, then stops;
every queue must empty (the hub confirmed every batch) and the store must hold every pushed sample once.

A copy (``sender.copies``) means a batch went unconfirmed for :data:`RESEND_AFTER` seconds: lost by the
stream or only late while the stream and its consumer elected leaders. How many the cluster actually lost
is what ``benchmarks/broker/telemetry_confirmation.py`` counts (PUBACK-only senders beside confirming ones).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_fleet import replica_logs
from replicas import PostgresServer
from telemetry_agents import Pump, TelemetryDevice, TelemetryWorld, missing_and_twice, stored_samples, telemetry_world

pytestmark = pytest.mark.slow

DEVICES = 20
RESEND_AFTER = 2.0  # seconds before an unconfirmed batch is sent again (the agent's default is 30)
SAMPLE_EVERY = 0.4  # seconds between two samples of one device: 50 samples a second in all
BEFORE_KILL, AFTER_KILL = 3.0, 4.0  # seconds of sampling around the leader's death
CONNECT_WAIT, DRAIN_WAIT = 30.0, 40.0


def _wait(what: str, done: Any, timeout: float, pump: Pump, detail: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert pump.error is None, f"the pump thread failed: {pump.error!r}"
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s: {detail()}"
        time.sleep(0.1)


def _state(devices: list[TelemetryDevice], which: set[str]) -> str:
    """What the senders of ``which`` saw, for a failure's message."""
    return "; ".join(f"{d.device_id}: highest confirmed {d.confirmations.seq} ({d.confirmations.count} confirmations), "
                     f"{d.sender.copies} copies, hub confirms {d.queue.hub_confirms}, {d.link.failovers} failovers"
                     for d in devices if d.device_id in which)


@pytest.fixture
def world(tmp_path: Path, postgres: PostgresServer) -> Iterator[TelemetryWorld]:
    with telemetry_world(tmp_path, postgres.fresh_database(), {"tel": (DEVICES, True)}, resend_after=RESEND_AFTER,
                         sample_every=SAMPLE_EVERY) as world:  # fmt: skip
        yield world


def test_every_sample_is_stored_once_when_the_inbound_streams_leader_is_killed(world: TelemetryWorld) -> None:
    devices, pump = world.devices, world.pump
    world.start()
    pump.sampling.set()
    _wait("every device saw the hub confirm a batch", lambda: all(d.queue.hub_confirms for d in devices),
          CONNECT_WAIT, pump, lambda: [d.device_id for d in devices if not d.queue.hub_confirms])
    time.sleep(BEFORE_KILL)
    world.cluster.kill(world.victim)
    time.sleep(AFTER_KILL)
    pump.sampling.clear()
    stopped_at = time.monotonic()
    _wait("every queue emptied (each batch confirmed by the hub)", lambda: all(len(d.queue) == 0 for d in devices),
          DRAIN_WAIT, pump, lambda: ({d.device_id: len(d.queue) for d in devices if len(d.queue)},
                                     replica_logs([world.hub])))  # fmt: skip

    missing, twice = missing_and_twice(devices, stored_samples(world.db_url))
    pushed = sum(len(d.pushed) for d in devices)
    copies = sum(d.sender.copies for d in devices)
    print(f"{pushed} samples from {len(devices)} devices, {copies} copies, queues empty "
          f"{time.monotonic() - stopped_at:.1f} s after sampling stopped")  # with -s: what the run exercised
    assert not missing, (f"{len(missing)} of {pushed} samples confirmed but not stored: {missing[:20]}; "
                         f"{_state(devices, {device for device, _seq in missing})}")
    assert not twice, f"{len(twice)} samples stored more than once: {twice[:20]}"
    assert copies >= 1, (f"no batch went unconfirmed for {RESEND_AFTER:g} s around the leader's death "
                         f"({pushed} samples; queues empty {time.monotonic() - stopped_at:.1f} s after sampling "
                         "stopped): the copy path was not exercised")  # fmt: skip
