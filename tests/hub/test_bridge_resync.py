"""After devices come back online the hub re-reads the retained reports of the devices it waits for and sends their
newest documents again (``edgeship.hub.bridge.resync``, ADR 0044).

Against a real Mosquitto, which loses nothing itself: each test puts the broker in the state a NATS node's loss
left behind (a report only in the retained store, a retained document older than the newest) by publishing it
there, then a device's live ``online`` ``"1"`` must bring the hub back in step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hub_world import HubWorld
from mqtt_probe import Probe

from edgeship.hub.bridge import ChannelLimit, InboundLimits, MqttBridge
from edgeship.hub.bridge.resync import Resync, lagging
from edgeship.hub.services import HubServices
from edgeship.hub.store.records import DesiredRecord, ReportedRecord
from edgeship.mqtt import device_topic, parse_broker_url

NOW = datetime(2026, 12, 5, tzinfo=timezone.utc)


def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return value


def _report(device_id: str, sequence: int) -> bytes:
    return json.dumps({"schemaVersion": 1, "deviceId": device_id, "lastAppliedSequence": sequence,
                       "status": {"code": 200, "description": "ok", "message": None}, "modules": {}}).encode()


def _start(world: HubWorld, url: str, protocol: str = "3.1.1",
           limits: InboundLimits | None = None) -> tuple[HubServices, MqttBridge]:
    bridge = MqttBridge(parse_broker_url(url, protocol=protocol), limits=limits)
    services = world.services(f"sqlite:///{world.root / 'hub.db'}", link=bridge)
    bridge.start(services)
    assert bridge.resync is not None
    bridge.resync.quiet, bridge.resync.settle = 0.2, 1.0  # a pass soon after the device came back
    return services, bridge


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    world = HubWorld(tmp_path / "hub")
    world.root.mkdir(parents=True)
    return world


def test_a_report_only_the_retained_store_holds_is_stored_once_its_device_comes_back(
    world: HubWorld, mosquitto: Any
) -> None:
    """MQTT 5, as replicas speak it. The report of sequence 2 is lost on its way to the hub (here: over the
    device's rate, dropped); the pass reads it from the retained store through its own subscription to the
    device's topic (the hub's wildcard is shared)."""
    limits = InboundLimits(reported=ChannelLimit(max_bytes=4096, rate=2.0, burst=1))
    services, bridge = _start(world, mosquitto.url, "5", limits)
    probe = Probe(mosquitto.url)
    try:
        services.fleet.create_device("dev-1")
        services.issuing.deliver_batches(["dev-1"], force=True)  # sequence 2
        probe.publish(device_topic("dev-1", "reported"), _report("dev-1", 1), retain=True)
        _eventually(lambda: services.fleet.get_device("dev-1").reported)
        probe.publish(device_topic("dev-1", "reported"), _report("dev-1", 2), retain=True)
        assert bridge.subscriber is not None
        _eventually(lambda: bridge.subscriber.dropped == 1)  # type: ignore[union-attr]
        assert services.fleet.get_device("dev-1").reported.state["lastAppliedSequence"] == 1  # type: ignore[union-attr]
        time.sleep(0.5)  # the device's rate allows a report again

        probe.publish(device_topic("dev-1", "online"), b"1", retain=True)
        _eventually(lambda: services.fleet.get_device("dev-1").reported.state["lastAppliedSequence"] == 2)  # type: ignore[union-attr]
        assert bridge.resync is not None
        assert _eventually(lambda: bridge.resync.passes)[-1].devices == ("dev-1",)  # type: ignore[union-attr]
    finally:
        bridge.stop()
        probe.close()


def test_a_retained_document_older_than_the_newest_is_replaced_by_the_stored_bytes(
    world: HubWorld, mosquitto: Any
) -> None:
    services, bridge = _start(world, mosquitto.url)
    probe = Probe(mosquitto.url)
    try:
        services.fleet.create_device("dev-1")
        services.fleet.create_device("dev-2")
        probe.subscribe(device_topic("dev-1", "desired"))
        first = probe.expect(device_topic("dev-1", "desired")).payload
        services.issuing.deliver_batches(["dev-1"], force=True)  # sequence 2
        newest = _eventually(lambda: (d := services.store.latest_desired(["dev-1"])["dev-1"]).sequence == 2 and d)
        _eventually(lambda: probe.expect(device_topic("dev-1", "desired")).payload != first)
        probe.publish(device_topic("dev-2", "reported"), _report("dev-2", 1), retain=True)  # dev-2 is in step
        _eventually(lambda: services.fleet.get_device("dev-2").reported)
        probe.publish(device_topic("dev-1", "desired"), first, retain=True)  # the retained store kept the old one

        probe.publish(device_topic("dev-1", "online"), b"1", retain=True)
        assert bridge.resync is not None
        done = _eventually(lambda: bridge.resync.passes and bridge.resync.passes[-1])  # type: ignore[union-attr]
        assert done.devices == ("dev-1",) and done.documents == 1  # dev-2's report answers its newest
        fresh = Probe(mosquitto.url)
        try:
            fresh.subscribe(device_topic("dev-1", "desired"))
            retained = fresh.expect(device_topic("dev-1", "desired"))
        finally:
            fresh.close()
        assert retained.retain and retained.payload == newest.envelope.encode("utf-8")  # stored bytes, not re-signed
        assert services.store.latest_desired(["dev-1"])["dev-1"].sequence == 2  # no new sequence issued
    finally:
        bridge.stop()
        probe.close()


def test_retained_presence_on_the_hubs_own_subscribe_schedules_no_pass(world: HubWorld, mosquitto: Any) -> None:
    probe = Probe(mosquitto.url)
    probe.publish(device_topic("dev-1", "online"), b"1", retain=True)
    probe.close()
    services, bridge = _start(world, mosquitto.url)
    try:
        services.fleet.create_device("dev-1")
        probe = Probe(mosquitto.url)
        probe.publish(device_topic("dev-1", "online"), b"0", retain=True)  # live, but not a device coming back
        probe.close()
        _eventually(lambda: (p := services.fleet.get_device("dev-1").presence) and p.online is False)
        assert bridge.resync is not None and bridge.resync.due() is None and not bridge.resync.passes
    finally:
        bridge.stop()


def test_a_pass_waits_for_devices_to_stop_coming_back_but_not_longer_than_max_delay() -> None:
    now = [100.0]
    resync = Resync(None, None, None, quiet=5.0, max_delay=30.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert resync.due() is None
    resync.device_online()
    assert resync.due() == 5.0
    for _ in range(10):  # a device comes back every 4 s: the quiet never comes
        now[0] += 4.0
        resync.device_online()
    assert resync.due() == 0.0  # 40 s after the first: due since 30 s


def test_lagging_devices_are_those_whose_report_answers_an_older_document_or_none() -> None:
    def doc(device: str, sequence: int) -> DesiredRecord:
        return DesiredRecord(device, sequence, "{}", "f", (), NOW, NOW)

    def rep(device: str, sequence: Any) -> ReportedRecord:
        return ReportedRecord(device, {"lastAppliedSequence": sequence}, NOW)

    documents = {d.device_id: d for d in (doc("a", 3), doc("b", 3), doc("c", 3), doc("d", 3))}
    reports = {r.device_id: r for r in (rep("a", 3), rep("b", 2), rep("d", None), rep("x", 9))}
    assert lagging(documents, reports) == ["b", "c", "d"]
