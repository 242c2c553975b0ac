"""The generated Mosquitto config against a real broker: isolation, logins, revocation, TLS."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_fleet import PASSWORDS, Fleet
from parts import need_binary
from secure_broker import Probe

from edgeship.hub.broker import hash_password, verify_password, write_broker_config
from edgeship.mqtt import device_topic

NOT_AUTHORIZED = 135  # CONNACK "not authorised": MQTT 3.1.1 code 5, which paho 2 reports as reason 135


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.close()


def _login(fleet: Fleet, probes: list[Probe], client_id: str, user: str | None, password: str | None) -> Probe:
    probe = Probe(fleet.plain_url, client_id, username=user, password=password)
    probes.append(probe)
    return probe


def test_a_device_gets_its_own_desired_document_but_not_another_devices(
    fleet: Fleet, probes: list[Probe]
) -> None:
    hub = _login(fleet, probes, "hub-1", "hub", PASSWORDS["hub"])
    a = _login(fleet, probes, "dev-a", "dev-a", PASSWORDS["dev-a"])
    assert hub.ok and a.ok
    hub.publish(device_topic("dev-a", "desired"), b"doc-for-a", retain=True)
    hub.publish(device_topic("dev-b", "desired"), b"doc-for-b", retain=True)
    assert a.subscribe(device_topic("dev-a", "desired")) == [1]
    assert a.next_message() == (device_topic("dev-a", "desired"), b"doc-for-a")
    granted = a.subscribe(device_topic("dev-b", "desired"))
    a.subscribe("edgeship/v1/devices/+/desired")  # a wildcard does not widen its rights either
    assert a.next_message(timeout=1.0) in (None, (device_topic("dev-a", "desired"), b"doc-for-a"))
    assert a.next_message(timeout=0.5) is None
    assert granted in ([128], [1])  # Mosquitto 2.0 grants the subscription and then delivers nothing on it


def test_a_device_cannot_publish_another_devices_reported_state(fleet: Fleet, probes: list[Probe]) -> None:
    hub = _login(fleet, probes, "hub-1", "hub", PASSWORDS["hub"])
    assert hub.subscribe("edgeship/v1/devices/#") == [1]
    a = _login(fleet, probes, "dev-a", "dev-a", PASSWORDS["dev-a"])
    a.publish(device_topic("dev-b", "reported"), b"forged")
    a.publish(device_topic("dev-a", "desired"), b"self-issued")
    a.publish(device_topic("dev-a", "reported"), b"mine")
    assert hub.next_message() == (device_topic("dev-a", "reported"), b"mine")
    assert hub.next_message(timeout=0.5) is None


def test_a_device_receives_commands_and_answers_only_on_its_own_topics(fleet: Fleet, probes: list[Probe]) -> None:
    hub = _login(fleet, probes, "hub-1", "hub", PASSWORDS["hub"])
    assert hub.subscribe("$share/hub/edgeship/v1/devices/+/responses/#") == [1]
    a = _login(fleet, probes, "dev-a", "dev-a", PASSWORDS["dev-a"])
    assert a.subscribe("edgeship/v1/devices/dev-a/commands/#") == [1]
    hub.publish("edgeship/v1/devices/dev-a/commands/restart/r1", b"{}")
    assert a.next_message() == ("edgeship/v1/devices/dev-a/commands/restart/r1", b"{}")
    a.publish("edgeship/v1/devices/dev-b/responses/r1", b"forged")
    a.publish("edgeship/v1/devices/dev-a/responses/r1", b"ok")
    assert hub.next_message() == ("edgeship/v1/devices/dev-a/responses/r1", b"ok")
    assert hub.next_message(timeout=0.5) is None


def test_a_wrong_password_an_unknown_user_and_anonymous_access_are_refused(
    fleet: Fleet, probes: list[Probe]
) -> None:
    assert _login(fleet, probes, "dev-a", "dev-a", "wrong").connected == NOT_AUTHORIZED
    assert _login(fleet, probes, "dev-z", "dev-z", "pw-a").connected == NOT_AUTHORIZED
    assert _login(fleet, probes, "anon", None, None).connected == NOT_AUTHORIZED
    assert _login(fleet, probes, "dev-c", "dev-c", "").connected == NOT_AUTHORIZED  # certificate-only user


def test_a_revoked_device_is_refused_after_a_reload(fleet: Fleet, probes: list[Probe]) -> None:
    assert _login(fleet, probes, "dev-b", "dev-b", PASSWORDS["dev-b"]).ok
    remaining = {k: v for k, v in PASSWORDS.items() if k != "dev-b"}
    write_broker_config(fleet.folder, fleet.users(remaining), fleet.settings)
    fleet.broker.reload()
    assert _login(fleet, probes, "dev-b2", "dev-b", PASSWORDS["dev-b"]).connected == NOT_AUTHORIZED
    assert _login(fleet, probes, "dev-a", "dev-a", PASSWORDS["dev-a"]).ok


def test_the_tls_listener_takes_a_hub_ca_certificate_as_the_login(fleet: Fleet, probes: list[Probe]) -> None:
    hub = _login(fleet, probes, "hub-1", "hub", PASSWORDS["hub"])
    hub.publish(device_topic("dev-c", "desired"), b"doc-for-c", retain=True)
    hub.publish(device_topic("dev-a", "desired"), b"doc-for-a", retain=True)
    cert, key = fleet.certs["dev-c"]
    c = Probe(fleet.tls_url, "dev-c", ca_file=fleet.ca_file, cert_file=cert, key_file=key)
    probes.append(c)
    assert c.ok, c.connected
    c.subscribe(device_topic("dev-c", "desired"))
    assert c.next_message() == (device_topic("dev-c", "desired"), b"doc-for-c")
    c.subscribe(device_topic("dev-a", "desired"))  # the certificate's CN is its username: %u isolates it too
    assert c.next_message(timeout=0.5) is None


def test_the_tls_listener_refuses_a_certificate_from_another_ca(fleet: Fleet, probes: list[Probe]) -> None:
    cert, key = fleet.certs["stranger"]
    stranger = Probe(fleet.tls_url, "dev-a", ca_file=fleet.ca_file, cert_file=cert, key_file=key)
    probes.append(stranger)
    assert not stranger.ok


def test_the_tls_listener_refuses_a_client_without_a_certificate(fleet: Fleet, probes: list[Probe]) -> None:
    bare = Probe(fleet.tls_url, "dev-a", username="dev-a", password=PASSWORDS["dev-a"], ca_file=fleet.ca_file)
    probes.append(bare)
    assert not bare.ok


def test_our_hashes_are_mosquitto_passwd_hashes(tmp_path: Path) -> None:
    tool = need_binary("mosquitto_passwd")
    passwd = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(passwd), "dev-a", "pä55 wörd"], check=True, capture_output=True)
    line = passwd.read_text().strip()
    user, hashed = line.split(":", 1)
    assert user == "dev-a" and hashed.startswith("$7$101$")
    assert verify_password("pä55 wörd", hashed)
    assert not verify_password("pa55 word", hashed)
    salt = base64.b64decode(hashed.split("$")[3])
    assert hash_password("pä55 wörd", salt=salt) == hashed
