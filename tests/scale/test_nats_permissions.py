"""``edgeship hub broker-config --engine nats``: the hub's devices become NATS users, checked on the real engine.

One cluster for the file (module scope): the CLI writes the node configs from a hub
store, the nodes start from them, and each test logs in as a device or the hub. The
store holds a device whose password the hub issued (its bcrypt hash is in the store),
devices whose passwords were issued before the hub kept bcrypt hashes (``$7$`` only:
left out unless the operator's file has them, back after a rotation) and a device with
no credentials (its hash comes from the file).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hub_world import HubWorld
from nats_cluster import NatsCluster

from edgeship.hub.broker.mosquitto import hash_password
from edgeship.hub.broker.nats import NatsFiles, hash_password_bcrypt
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.store import CredentialStore, HubStore, sqlite_url
from edgeship.mqtt import device_topic, parse_broker_url
from edgeship.mqtt.client import make_client

EDGESHIP = [sys.executable, "-m", "edgeship"]
OWN, OTHER, MOSQUITTO_ONLY, ISSUED, LATER = "site.a", "site-b", "site-c", "site.d", "site-e"


class Session:
    """A logged-in MQTT client that records CONNACK codes, disconnects, SUBACK codes and messages.

    ``client_id``: another client id than the login's own (an impostor, ADR 0051)."""

    def __init__(self, url: str, username: str, password: str, client_id: str | None = None) -> None:
        self.settings = parse_broker_url(url, username=username, password=password)
        self.client = make_client(self.settings, username, persistent=False)
        if client_id is not None:  # make_client sends mqtt_client_id(username)
            self.client._client_id = client_id.encode()
        self.connack: list[int] = []
        self.disconnects = 0
        self.subacks: list[list[int]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(int(rc.value))
        self.client.on_disconnect = lambda *_a: self._disconnected()
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.append([int(c.value) for c in codes])
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(self.settings.host, self.settings.port)
        self.client.loop_start()
        started = time.monotonic()
        # a refused login may get no CONNACK, only a closed connection
        wait(lambda: bool(self.connack) or self.disconnects > 0 or time.monotonic() > started + 10)

    def _disconnected(self) -> None:
        self.disconnects += 1

    @property
    def accepted(self) -> bool:
        return bool(self.connack) and self.connack[0] == 0

    def subscribe(self, topic: str) -> list[int]:
        count = len(self.subacks)
        self.client.subscribe(topic, 1)
        wait(lambda: len(self.subacks) > count)
        return self.subacks[-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@dataclass
class Cluster:
    running: NatsCluster
    output: str  # what the CLI printed
    issued: str  # the password the hub issued to ISSUED
    root: Path  # the hub's workspace (hub.db) and the CLI's inputs
    world: HubWorld  # the hub's keys, to open its services again
    command: list[str]  # the CLI command that wrote the configs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("nats-cli")
    now = datetime.now(timezone.utc)
    world = HubWorld(root / "world")
    services = world.services(sqlite_url(root))
    try:
        _view, issued = DeviceCredentials(services.fleet).create_device(ISSUED)  # what POST /devices runs
        services.store.add_devices([(OWN, {}), (OTHER, {}), (MOSQUITTO_ONLY, {}), (LATER, {})], now)
        for device_id, password in ((OWN, "pw-a"), (MOSQUITTO_ONLY, "pw-c"), (LATER, "pw-e")):
            # issued before the hub kept bcrypt hashes (revision 0008): the store has only the $7$ hash
            CredentialStore(services.store).issue(device_id, "password", now, password_hash=hash_password(password))
    finally:
        services.store.close()
    assert issued.password is not None
    (root / "hub.pw").write_text("hub-secret\n")
    (root / "devices.pw").write_text(f"{OWN}:{hash_password_bcrypt('pw-a')}\n{OTHER}:{hash_password_bcrypt('pw-b')}\n"
                                     f"# a Mosquitto hash cannot serve NATS\n")  # fmt: skip
    nodes = NatsCluster.pick_nodes(3)
    out = root / "nats"
    specs = [f"{n.name}={n.host}:{n.client_port},{n.cluster_port},{n.mqtt_port},{n.http_port}" for n in nodes]
    command = [*EDGESHIP, "hub", "broker-config", "--engine", "nats", "-o", str(out), "--db", sqlite_url(root),
               "--hub-password-file", str(root / "hub.pw"), "--device-passwords", str(root / "devices.pw"),
               *(arg for spec in specs for arg in ("--nats-node", spec))]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = NatsFiles({n.name: out / f"{n.name}.conf" for n in nodes}, out / "users.conf")
    with NatsCluster.from_files(out, nodes, files) as running:
        yield Cluster(running, result.stdout, issued.password, root, world, command)


def test_the_cli_writes_a_config_per_node_and_names_the_devices_it_left_out(cluster: Cluster) -> None:
    output = " ".join(cluster.output.split())
    assert "n0.conf, n1.conf, n2.conf and users.conf" in output
    assert "for 3 devices (1 with the password the hub issued, 2 from --device-passwords)" in output
    assert ("Left out 2 device(s) whose password the hub issued before it kept bcrypt hashes (NATS checks no other "
            f"format): {MOSQUITTO_ONLY}, {LATER}; rotate each with 'edgeship device rotate-credentials ID'") in output
    assert "without a password hash" not in output
    assert cluster.issued not in cluster.output
    users = cluster.running.files.users_file
    assert users.stat().st_mode & 0o077 == 0
    assert cluster.issued not in users.read_text() and "pw-a" not in users.read_text()


def test_a_device_logs_in_with_the_password_the_hub_issued_and_not_with_another(cluster: Cluster) -> None:
    running = cluster.running
    device = Session(running.urls[1], ISSUED, cluster.issued)
    wrong = Session(running.urls[1], ISSUED, cluster.issued[:-1] + ("A" if cluster.issued[-1] != "A" else "B"))
    try:
        assert device.connack == [0] and wrong.connack != [0]
        assert device.subscribe(device_topic(ISSUED, "desired")) == [1]
        assert device.subscribe(device_topic(OWN, "desired")) == [128]
    finally:
        device.close()
        wrong.close()


def test_a_device_issued_before_bcrypt_hashes_logs_in_after_its_rotation(cluster: Cluster) -> None:
    running = cluster.running
    before = Session(running.urls[0], LATER, "pw-e")
    before.close()
    services = cluster.world.services(sqlite_url(cluster.root))
    try:
        rotated = DeviceCredentials(services.fleet).rotate_credentials(LATER)  # what .../credentials/rotate runs
    finally:
        services.store.close()
    assert rotated.password is not None
    result = subprocess.run(cluster.command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"before it kept bcrypt hashes (NATS checks no other format): {MOSQUITTO_ONLY};" in " ".join(
        result.stdout.split())
    running.reload()
    deadline = time.monotonic() + 20
    while True:
        after = Session(running.urls[0], LATER, rotated.password)
        after.close()
        if after.connack == [0] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert before.connack != [0] and after.connack == [0]


def test_a_device_reads_only_its_own_documents_on_any_node(cluster: Cluster) -> None:
    running = cluster.running
    hub = Session(running.urls[2], "hub", "hub-secret")
    own = Session(running.urls[0], OWN, "pw-a")
    try:
        assert hub.connack == [0] and own.connack == [0]
        for device in (OWN, OTHER):
            hub.client.publish(device_topic(device, "desired"), f"for {device}".encode(), qos=1,
                               retain=True).wait_for_publish(10)  # fmt: skip
        assert own.subscribe(device_topic(OWN, "desired")) == [1]
        assert own.subscribe(device_topic(OTHER, "desired")) == [128]
        assert own.subscribe("edgeship/v1/devices/+/desired") == [128]
        own.subscribe("$MQTT/sub/#")  # whatever the SUBACK says, nothing of another device's may arrive
        wait(lambda: (device_topic(OWN, "desired"), f"for {OWN}".encode()) in own.messages)
        hub.client.publish(device_topic(OTHER, "desired"), b"again", qos=1, retain=True).wait_for_publish(10)
        time.sleep(1.0)
        assert [topic for topic, _ in own.messages] == [device_topic(OWN, "desired")]
    finally:
        own.close()
        hub.close()


def test_a_device_receives_its_direct_method_calls_and_not_another_devices(cluster: Cluster) -> None:
    running = cluster.running
    hub = Session(running.urls[2], "hub", "hub-secret")
    own = Session(running.urls[1], OWN, "pw-a")
    try:
        # NATS subscribes 'commands/#' as '...commands.>' and '...commands': both must be granted, or the SUBACK is 0x80
        assert own.subscribe(device_topic(OWN, "commands") + "/#") == [1]
        assert own.subscribe(device_topic(OTHER, "commands") + "/#") == [128]
        for device in (OTHER, OWN):
            hub.client.publish(f"{device_topic(device, 'commands')}/logs/r-{device}", b"{}", qos=1).wait_for_publish(10)
        wait(lambda: (f"{device_topic(OWN, 'commands')}/logs/r-{OWN}", b"{}") in own.messages)
        assert [topic for topic, _ in own.messages] == [f"{device_topic(OWN, 'commands')}/logs/r-{OWN}"]
    finally:
        own.close()
        hub.close()


def test_a_device_cannot_publish_as_another_device(cluster: Cluster) -> None:
    running = cluster.running
    hub = Session(running.urls[1], "hub", "hub-secret")
    own = Session(running.urls[0], OWN, "pw-a")
    try:
        assert hub.subscribe("edgeship/v1/devices/+/reported") == [1]
        own.client.publish(device_topic(OTHER, "reported"), b"forged", qos=1).wait_for_publish(10)  # PUBACKed anyway
        own.client.publish(device_topic(OWN, "reported"), b"mine", qos=1).wait_for_publish(10)
        wait(lambda: (device_topic(OWN, "reported"), b"mine") in hub.messages)
        time.sleep(0.5)
        assert (device_topic(OTHER, "reported"), b"forged") not in hub.messages
    finally:
        own.close()
        hub.close()


def test_logins_without_a_usable_password_are_refused(cluster: Cluster) -> None:
    running = cluster.running
    wrong = Session(running.urls[0], OWN, "not-the-password")
    left_out = Session(running.urls[0], MOSQUITTO_ONLY, "pw-c")
    try:
        assert wrong.connack != [0] and left_out.connack != [0]
    finally:
        wrong.close()
        left_out.close()
    store = HubStore(sqlite_url(cluster.root))
    try:
        stored = CredentialStore(store).active([MOSQUITTO_ONLY])[MOSQUITTO_ONLY]
    finally:
        store.close()
    assert stored.password_hash and stored.password_hash.startswith("$7$") and stored.bcrypt_hash is None


def test_a_device_login_does_not_work_on_the_nats_protocol_port(cluster: Cluster) -> None:
    """On the NATS port ``$MQTT.sub.>`` would let a device read other devices' deliveries: MQTT only."""
    running = cluster.running
    node = running.nodes[0]
    with socket.create_connection((node.host, node.client_port), timeout=10) as sock:
        assert sock.recv(4096).startswith(b"INFO ")
        connect = {"user": OWN, "pass": "pw-a", "verbose": False, "pedantic": False, "protocol": 1}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"-ERR 'Authorization Violation'"), answer


def test_a_client_id_with_a_dot_is_sent_as_a_tilde() -> None:
    client = make_client(parse_broker_url("mqtt://127.0.0.1:1"), "site.a", persistent=True)
    assert client._client_id == b"site~a"
    assert isinstance(client, paho.Client)
