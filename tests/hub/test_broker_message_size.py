"""The generated Mosquitto config's first line of defence: a payload over 1 MiB never reaches the hub."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from mosquitto import Mosquitto
from mqtt_probe import Probe

from edgeship.deployment import MAX_DOCUMENT_BYTES
from edgeship.hub.broker.mosquitto import MosquittoSettings, render_mosquitto_conf
from edgeship.mqtt import device_topic

pytestmark = pytest.mark.mosquitto


def test_the_generated_config_limits_payloads_to_the_largest_edgeship_message(tmp_path: Path) -> None:
    limit = MosquittoSettings().message_size_limit
    assert limit == MAX_DOCUMENT_BYTES, "a desired document of the maximum size must still pass"
    conf = render_mosquitto_conf(MosquittoSettings(), tmp_path / "passwd", tmp_path / "acl").splitlines()
    assert f"message_size_limit {limit}" in conf


def test_mosquitto_drops_a_payload_over_the_limit_before_the_hub_reads_it(tmp_path: Path) -> None:
    limit = MosquittoSettings().message_size_limit
    broker = Mosquitto(tmp_path / "mq", extra_config=f"message_size_limit {limit}\n").start()
    hub, device = Probe(broker.url), Probe(broker.url, client_id="dev-1")
    try:
        topic = device_topic("dev-1", "telemetry")
        hub.subscribe(topic)
        device.publish(topic, b"x" * (limit + 1))  # the broker completes the QoS 1 flow, and drops it
        device.publish(topic, b"y" * limit)
        got = hub.messages.get(timeout=10)
        assert got.payload[:1] == b"y" and len(got.payload) == limit
        with pytest.raises(queue.Empty):
            hub.messages.get(timeout=0.5)
    finally:
        hub.close()
        device.close()
        broker.stop()
