"""The generated ACL lets a device read its own retained trust-root chain, and no other device's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broker_fleet import PASSWORDS, Fleet
from secure_broker import Probe

from edgeship.hub.broker.mosquitto import render_acl
from edgeship.mqtt import device_topic


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.close()


def test_the_acl_names_the_trust_root_topic_for_reading_only() -> None:
    acl = render_acl()
    assert "pattern read edgeship/v1/devices/%u/trust-root" in acl
    assert "pattern write edgeship/v1/devices/%u/trust-root" not in acl


def test_a_device_reads_its_own_trust_root_but_not_another_devices(fleet: Fleet, probes: list[Probe]) -> None:
    hub = Probe(fleet.plain_url, "hub-1", username="hub", password=PASSWORDS["hub"])
    a = Probe(fleet.plain_url, "dev-a", username="dev-a", password=PASSWORDS["dev-a"])
    probes += [hub, a]
    assert hub.ok and a.ok
    hub.publish(device_topic("dev-a", "trust-root"), b'{"chain": ["a"]}', retain=True)
    hub.publish(device_topic("dev-b", "trust-root"), b'{"chain": ["b"]}', retain=True)
    assert a.subscribe(device_topic("dev-a", "trust-root")) == [1]
    assert a.next_message() == (device_topic("dev-a", "trust-root"), b'{"chain": ["a"]}')
    a.subscribe(device_topic("dev-b", "trust-root"))
    a.subscribe("edgeship/v1/devices/+/trust-root")
    assert a.next_message(timeout=1.0) in (None, (device_topic("dev-a", "trust-root"), b'{"chain": ["a"]}'))
    assert a.next_message(timeout=0.5) is None


def test_a_device_cannot_publish_a_trust_root(fleet: Fleet, probes: list[Probe]) -> None:
    hub = Probe(fleet.plain_url, "hub-1", username="hub", password=PASSWORDS["hub"])
    a = Probe(fleet.plain_url, "dev-a", username="dev-a", password=PASSWORDS["dev-a"])
    probes += [hub, a]
    assert hub.subscribe("edgeship/v1/devices/#") == [1]
    a.publish(device_topic("dev-a", "trust-root"), b"self-issued", retain=True)
    a.publish(device_topic("dev-a", "reported"), b"mine")
    assert hub.next_message() == (device_topic("dev-a", "reported"), b"mine")
    assert hub.next_message(timeout=0.5) is None
