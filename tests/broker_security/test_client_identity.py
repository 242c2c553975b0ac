"""One login is one identity on the generated Mosquitto config: a client id cannot reach another's session.

Without ``use_username_as_clientid`` a device that logs in with its own credentials
but another device's client id closes that device's connection, and with paho's
automatic reconnect the two keep closing each other for good (issue 12). With it the
broker replaces the client id by the username (or, on the certificate listener, by the
certificate's common name), so the intruder gets its own session. The same rule gives
each hub process its own session under its own user (``hub``, ``hub-2``).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_fleet import PASSWORDS, Fleet
from secure_broker import Probe

sys.path.insert(0, str(Path(__file__).parent.parent / "hub"))

from hub_workspace import make_hub_workspace

from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import device_topic

TAKEN_OVER = "already connected, closing old connection"  # Mosquitto's log line when a session is taken over


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.close()


def _add(probes: list[Probe], probe: Probe) -> Probe:
    probes.append(probe)
    assert probe.ok, probe.connected
    return probe


def _password(fleet: Fleet, probes: list[Probe], client_id: str, user: str, *, persistent: bool = False) -> Probe:
    return _add(probes, Probe(fleet.plain_url, client_id, username=user, password=PASSWORDS[user],
                              persistent=persistent))  # fmt: skip


def _certificate(fleet: Fleet, probes: list[Probe], client_id: str, device: str) -> Probe:
    cert, key = fleet.certs[device]
    return _add(probes, Probe(fleet.tls_url, client_id, ca_file=fleet.ca_file, cert_file=cert, key_file=key))


def _still_served(hub: Probe, a: Probe, payload: bytes) -> None:
    """A receives a new QoS 1 document on the connection it opened first, and was never dropped."""
    hub.publish(device_topic("dev-a", "desired"), payload, retain=True)
    assert a.next_message(timeout=5) == (device_topic("dev-a", "desired"), payload)
    assert a.drops == 0 and a.connects == 1 and a.client.is_connected()


def _session_of(fleet: Fleet, user: str) -> str | None:
    """The client id Mosquitto gave the last connection of ``user`` (from its log)."""
    found = re.findall(rf"New client connected from \S+ as (\S+) \(.*u'{re.escape(user)}'\)",
                       fleet.broker.log.read_text())  # fmt: skip
    return found[-1] if found else None


def test_a_device_logging_in_with_another_devices_client_id_by_password_does_not_disconnect_it(
    fleet: Fleet, probes: list[Probe]
) -> None:
    hub = _password(fleet, probes, "hub", "hub")
    hub.publish(device_topic("dev-a", "desired"), b"doc-1", retain=True)
    a = _password(fleet, probes, "dev-a", "dev-a")
    assert a.subscribe(device_topic("dev-a", "desired")) == [1]
    assert a.next_message() == (device_topic("dev-a", "desired"), b"doc-1")

    b = _password(fleet, probes, "dev-a", "dev-b")  # its own password, dev-a's client id
    b.subscribe(device_topic("dev-a", "desired"))
    _still_served(hub, a, b"doc-2")
    assert b.next_message(timeout=0.5) is None  # and B did not get A's session or its messages
    assert _session_of(fleet, "dev-b") == "dev-b"  # the broker gave it its own id
    assert TAKEN_OVER not in fleet.broker.log.read_text()


def test_a_device_logging_in_with_another_devices_client_id_by_certificate_does_not_disconnect_it(
    fleet: Fleet, probes: list[Probe]
) -> None:
    hub = _password(fleet, probes, "hub", "hub")
    a = _certificate(fleet, probes, "dev-a", "dev-a")
    assert a.subscribe(device_topic("dev-a", "desired")) == [1]

    c = _certificate(fleet, probes, "dev-a", "dev-c")  # dev-c's certificate, dev-a's client id
    b = _password(fleet, probes, "dev-a", "dev-b")  # and over the password listener at the same time
    _still_served(hub, a, b"doc-over-tls")
    assert c.drops == 0 and b.drops == 0  # nor do the two intruders take turns with each other
    assert _session_of(fleet, "dev-c") == "dev-c" and _session_of(fleet, "dev-b") == "dev-b"
    assert TAKEN_OVER not in fleet.broker.log.read_text()


def test_a_certificate_login_is_bound_to_its_common_name_whatever_username_it_sends(
    fleet: Fleet, probes: list[Probe]
) -> None:
    cert, key = fleet.certs["dev-c"]
    c = _add(probes, Probe(fleet.tls_url, "hub", username="hub", password=PASSWORDS["hub"], ca_file=fleet.ca_file,
                           cert_file=cert, key_file=key))  # fmt: skip
    hub = _password(fleet, probes, "hub", "hub")
    hub.publish(device_topic("dev-a", "desired"), b"doc-for-a", retain=True)
    c.subscribe(device_topic("dev-a", "desired"))
    assert c.next_message(timeout=0.5) is None  # no hub rights from a sent username
    assert c.drops == 0 and hub.drops == 0  # and the real hub and the device do not take turns
    assert _session_of(fleet, "dev-c") == "dev-c"  # the CN is the username and the client id


def test_two_hub_processes_with_their_own_users_stay_connected_side_by_side(
    fleet: Fleet, probes: list[Probe]
) -> None:
    first = _password(fleet, probes, "edgeship-hub", "hub")
    second = _password(fleet, probes, "edgeship-hub", "hub-2")  # even with the same client id configured
    for hub in (first, second):
        assert hub.subscribe("edgeship/v1/devices/+/reported") == [1]
    a = _password(fleet, probes, "dev-a", "dev-a")
    a.publish(device_topic("dev-a", "reported"), b'{"ok":true}')
    for hub in (first, second):
        assert hub.next_message(timeout=5) == (device_topic("dev-a", "reported"), b'{"ok":true}')
    assert a.subscribe(device_topic("dev-a", "desired")) == [1]
    second.publish(device_topic("dev-a", "desired"), b"from-hub-2", retain=True)  # both carry the hub's rights
    assert a.next_message(timeout=5) == (device_topic("dev-a", "desired"), b"from-hub-2")
    assert first.drops == 0 and second.drops == 0
    assert (_session_of(fleet, "hub"), _session_of(fleet, "hub-2")) == ("hub", "hub-2")


def test_the_hubs_persistent_session_resumes_under_its_user_after_a_restart(
    fleet: Fleet, probes: list[Probe]
) -> None:
    hub = _password(fleet, probes, "run-1", "hub-2", persistent=True)
    assert hub.subscribe("edgeship/v1/devices/+/telemetry") == [1]
    hub.close()  # the hub stops; its session stays on the broker
    a = _password(fleet, probes, "dev-a", "dev-a")
    a.publish(device_topic("dev-a", "telemetry"), b"while-the-hub-was-down")  # QoS 1, not retained
    restarted = _password(fleet, probes, "run-2", "hub-2", persistent=True)  # another client id, same user
    assert restarted.next_message(timeout=5) == (device_topic("dev-a", "telemetry"), b"while-the-hub-was-down")


def test_a_restarted_hub_process_gets_the_telemetry_sent_while_it_was_down(
    fleet: Fleet, probes: list[Probe], tmp_path: Path
) -> None:
    ws, _world = make_hub_workspace(tmp_path / "hubws")

    def hub(client_id: str) -> HubServer:  # hub-2 with a persistent session; the client id it sends differs
        return HubServer(HubConfig(workspace=ws.root, broker_url=fleet.plain_url, broker_username="hub-2",
                                   broker_password=PASSWORDS["hub-2"], client_id=client_id, port=0))  # fmt: skip

    with hub("run-1") as first:
        first.services.fleet.create_device("dev-a")
    a = _password(fleet, probes, "dev-a", "dev-a")
    batch = {"schemaVersion": 1, "deviceId": "dev-a", "samples": [
        {"time": "2026-01-01T00:00:00Z", "seq": 1, "cpuPercent": 1.0, "memoryBytes": 1}]}  # fmt: skip
    a.publish(device_topic("dev-a", "telemetry"), json.dumps(batch).encode())  # QoS 1, not retained
    with hub("run-2") as restarted:
        deadline = time.monotonic() + 10
        while not restarted.services.fleet.recent_telemetry("dev-a") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(restarted.services.fleet.recent_telemetry("dev-a")) == 1
        assert restarted.bridge.client_id == "run-2"
