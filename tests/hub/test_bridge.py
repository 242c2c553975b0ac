"""The hub's MQTT bridge against a real Mosquitto: documents out, device messages in, direct methods."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hub_world import HubWorld
from mqtt_probe import Probe, Received

from edgeship.agent.decide import accept_document
from edgeship.hub.bridge import MAX_MESSAGE_BYTES, MqttBridge
from edgeship.hub.broker import EmbeddedBroker
from edgeship.hub.errors import DeviceTimeoutError
from edgeship.hub.services import HubServices
from edgeship.mqtt import device_topic, parse_broker_url, parse_device_topic, response_topic


def _telemetry(device_id: str, seq: int = 1) -> dict[str, Any]:
    return {
        "schemaVersion": 1, "deviceId": device_id, "dropped": 0,
        "samples": [{"time": "2026-01-01T00:00:00Z", "seq": seq, "cpuPercent": 12.5, "memoryBytes": 1024,
                     "modules": {"digits": {"requests": 3, "errors": 0,
                                            "latencyMs": {"p50": 1.0, "p95": 2.0, "p99": 3.0}}}}],
    }


def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    world = HubWorld(tmp_path / "hub")
    world.root.mkdir(parents=True)
    return world


def _start(world: HubWorld, url: str, protocol: str = "3.1.1") -> tuple[HubServices, MqttBridge]:
    bridge = MqttBridge(parse_broker_url(url, protocol=protocol))
    service = world.services(f"sqlite:///{world.root / 'hub.db'}", link=bridge)
    bridge.start(service)
    return service, bridge


@pytest.fixture
def hub(world: HubWorld, mosquitto: Any) -> Iterator[tuple[HubServices, MqttBridge]]:
    service, bridge = _start(world, mosquitto.url)
    yield service, bridge
    bridge.stop()


@pytest.fixture
def probe(mosquitto: Any) -> Iterator[Probe]:
    client = Probe(mosquitto.url)
    yield client
    client.close()


def test_a_new_document_arrives_retained_and_the_agent_accepts_it(
    world: HubWorld, hub: tuple[HubServices, MqttBridge], probe: Probe
) -> None:
    service, _bridge = hub
    service.fleet.create_device("dev-1", {"site": "lab"})
    probe.subscribe(device_topic("dev-1", "desired"))
    got = probe.expect(device_topic("dev-1", "desired"))
    if not got.retain:  # the subscription beat the hub's publish, so it came live: a new one must find it retained
        probe.subscribe(device_topic("dev-1", "desired"))
        again = probe.expect(device_topic("dev-1", "desired"))
        assert again.payload == got.payload
        got = again
    assert got.retain and got.qos == 1
    accepted = accept_document(got.payload, world.trust_root(), "dev-1", None, datetime.now(timezone.utc))
    assert accepted.document.sequence == 1 and accepted.document.device_id == "dev-1"


def test_reported_telemetry_and_online_land_in_the_store(hub: tuple[HubServices, MqttBridge], probe: Probe) -> None:
    service, _bridge = hub
    service.fleet.create_device("dev-1")
    report = {"schemaVersion": 1, "deviceId": "dev-1", "lastAppliedSequence": 1,
              "status": {"code": 200, "description": "ok", "message": None}, "modules": {}}
    probe.publish(device_topic("dev-1", "reported"), json.dumps(report), retain=True)
    probe.publish(device_topic("dev-1", "telemetry"), json.dumps(_telemetry("dev-1")))
    probe.publish(device_topic("dev-1", "online"), b"1", retain=True)
    view = _eventually(lambda: (v := service.fleet.get_device("dev-1")).reported and v.presence and v)
    assert view.reported.state["lastAppliedSequence"] == 1
    assert view.presence.online is True
    batches = _eventually(lambda: service.fleet.recent_telemetry("dev-1"))
    assert batches[0].batch["samples"][0]["seq"] == 1
    probe.publish(device_topic("dev-1", "online"), b"0", retain=True)  # what the device's last will says
    _eventually(lambda: service.fleet.get_device("dev-1").presence.online is False)


def test_malformed_messages_are_dropped_and_the_next_good_one_lands(
    hub: tuple[HubServices, MqttBridge], probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    service, bridge = hub
    service.fleet.create_device("dev-1")
    bad: list[tuple[str, bytes]] = [
        (device_topic("dev-1", "reported"), b"{not json"),
        (device_topic("dev-1", "reported"), b"[1, 2]"),
        (device_topic("dev-1", "telemetry"), json.dumps({"schemaVersion": 3, "deviceId": "dev-1"}).encode()),
        (device_topic("dev-1", "telemetry"), json.dumps(_telemetry("dev-2")).encode()),
        (device_topic("dev-1", "telemetry"), b"x" * (MAX_MESSAGE_BYTES + 1)),
        (device_topic("dev-1", "online"), b"maybe"),
        (device_topic("ghost", "telemetry"), json.dumps(_telemetry("ghost")).encode()),
        ("edgeship/v1/devices/dev-1/desired/extra", b"{}"),
    ]
    with caplog.at_level("WARNING", logger="edgeship.hub.bridge"):
        for topic, payload in bad:
            probe.publish(topic, payload)
        probe.publish(device_topic("dev-1", "telemetry"), json.dumps(_telemetry("dev-1", seq=7)))
        batches = _eventually(lambda: service.fleet.recent_telemetry("dev-1"))
        assert bridge.subscriber is not None and bridge.subscriber.dropped == 7
        bridge.subscriber.log_summary(force=True)  # the worker writes it once per log_interval
    assert [b.batch["samples"][0]["seq"] for b in batches] == [7]
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeship.hub.bridge"]
    assert len(lines) == 1, "one summary line, not one line per message"
    assert "dropped 7 inbound device message(s)" in lines[0] and "'dev-1' 6" in lines[0]
    assert "not JSON" in lines[0] and "schemaVersion" in lines[0] and "no such device" in lines[0]
    assert f"{MAX_MESSAGE_BYTES + 1} bytes, over the" in lines[0] and "\n" not in lines[0]
    stats = bridge.subscriber.stats()
    assert stats.by_device == {"dev-1": 6, "ghost": 1} and stats.by_reason[("telemetry", "too-large")] == 1


def test_broker_restart_the_hub_reconnects_and_republishes_the_newest_documents(
    world: HubWorld, hub: tuple[HubServices, MqttBridge], mosquitto: Any
) -> None:
    service, bridge = hub
    service.fleet.create_device("dev-1")
    mosquitto.stop()
    _eventually(lambda: not bridge.client.is_connected())
    service.fleet.create_device("dev-2")  # issued while the broker is down: not lost
    service.fleet.update_tags("dev-1", {"ring": "canary"})
    mosquitto.start()
    _eventually(lambda: bridge.connections >= 2 and bridge.wait_republished(0.05), timeout=15)
    assert bridge.republished == 2
    probe = Probe(mosquitto.url)
    try:
        probe.subscribe(f"{device_topic('dev-2', 'desired')}")
        doc = accept_document(probe.expect().payload, world.trust_root(), "dev-2", None, datetime.now(timezone.utc))
        assert doc.document.sequence == 1
    finally:
        probe.close()


def test_direct_method_round_trip_and_timeout(hub: tuple[HubServices, MqttBridge], probe: Probe) -> None:
    service, _bridge = hub
    service.fleet.create_device("dev-1")
    service.fleet.create_device("dev-2")

    def fake_agent(client: Probe, message: Received) -> None:
        topic = parse_device_topic(message.topic)
        assert topic is not None and topic.channel == "commands"
        method, request_id = topic.rest
        args = json.loads(message.payload)
        if method == "logs":
            answer = {"status": 200, "result": {"logs": f"last {args['tail']} lines of {args['module']}"}}
        else:
            answer = {"status": 404, "error": f"no method {method}"}
        client.client.publish(response_topic(topic.device_id, request_id), json.dumps(answer), qos=1)

    probe.handlers.append(fake_agent)
    probe.subscribe("edgeship/v1/devices/dev-1/commands/+/+")
    answer = service.fleet.invoke_method("dev-1", "logs", {"module": "digits", "tail": 5}, 5)
    assert answer == {"status": 200, "result": {"logs": "last 5 lines of digits"}}
    assert service.fleet.invoke_method("dev-1", "reboot", {}, 5)["status"] == 404
    started = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match=r"'dev-2' did not answer 'restart' within 0\.3 s; is it online"):
        service.fleet.invoke_method("dev-2", "restart", {"module": "digits"}, 0.3)
    assert time.monotonic() - started < 2


def test_the_bridge_works_with_the_embedded_amqtt_broker(world: HubWorld) -> None:
    with EmbeddedBroker("127.0.0.1", 0) as broker:
        service, bridge = _start(world, broker.url)
        try:
            service.fleet.create_device("dev-1")
            probe = Probe(broker.url).subscribe(device_topic("dev-1", "desired"))
            got = probe.expect()
            accept_document(got.payload, world.trust_root(), "dev-1", None, datetime.now(timezone.utc))
            probe.publish(device_topic("dev-1", "telemetry"), json.dumps(_telemetry("dev-1")))
            _eventually(lambda: service.fleet.recent_telemetry("dev-1"))
            probe.close()
        finally:
            bridge.stop()


def test_mqtt5_replicas_share_the_device_messages(world: HubWorld, mosquitto: Any, probe: Probe) -> None:
    first, first_bridge = _start(world, mosquitto.url, protocol="5")
    _second, second_bridge = _start(world, mosquitto.url, protocol="5")
    try:
        first.fleet.create_device("dev-1")
        for seq in range(20):
            probe.publish(device_topic("dev-1", "telemetry"), json.dumps(_telemetry("dev-1", seq)))
        subscribers = [b.subscriber for b in (first_bridge, second_bridge)]
        _eventually(lambda: sum(s.handled for s in subscribers if s is not None) == 20)
        assert all(s is not None and s.handled > 0 for s in subscribers), "one replica got everything"
        assert len(first.fleet.recent_telemetry("dev-1", 100)) == 20  # each batch stored once
    finally:
        first_bridge.stop()
        second_bridge.stop()


def test_telemetry_is_bounded_per_device(hub_url: str, world: HubWorld) -> None:
    from edgeship.hub.store import TelemetryStore

    service = world.services(hub_url)
    service.fleet.create_device("dev-1")
    service.fleet.create_device("dev-2")
    store = TelemetryStore(service.store, keep=3)
    for seq in range(5):
        store.add("dev-1", _telemetry("dev-1", seq), datetime.now(timezone.utc))
    store.add("dev-2", _telemetry("dev-2", 9), datetime.now(timezone.utc))
    kept = [r.batch["samples"][0]["seq"] for r in store.recent("dev-1", 10)]
    assert kept == [4, 3, 2]
    assert [r.batch["samples"][0]["seq"] for r in store.recent("dev-2", 10)] == [9]
    assert store.presence()["dev-1"].online is True
