"""The embedded amqtt broker: retained QoS 1 delivery to a late subscriber, and a clean stop."""

from __future__ import annotations

import socket

import pytest
from mqtt_probe import Probe

from edgeship.errors import TransportError
from edgeship.hub.broker import EmbeddedBroker


def test_retained_qos1_message_reaches_a_late_subscriber_then_the_broker_stops() -> None:
    broker = EmbeddedBroker("127.0.0.1", 0).start()
    try:
        publisher = Probe(broker.url)
        publisher.publish("edgeship/v1/devices/dev-1/desired", b"doc-1", retain=True)
        subscriber = Probe(broker.url).subscribe("edgeship/v1/devices/dev-1/desired")
        got = subscriber.expect("edgeship/v1/devices/dev-1/desired")
        assert got.payload == b"doc-1" and got.retain and got.qos == 1
        publisher.publish("edgeship/v1/devices/dev-1/desired", b"doc-2", retain=True)
        live = subscriber.expect()
        assert live.payload == b"doc-2" and live.qos == 1
        publisher.close()
        subscriber.close()
    finally:
        broker.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.port), timeout=0.5):
        pass


def test_a_taken_port_is_one_clear_error() -> None:
    with EmbeddedBroker("127.0.0.1", 0) as first, pytest.raises(TransportError, match="could not listen"):
        EmbeddedBroker("127.0.0.1", first.port).start()
