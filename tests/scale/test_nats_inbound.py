"""Hub replicas on a NATS cluster share the devices' messages through one JetStream consumer (ADR 0047).

Real parts only: a 3-node ``nats-server`` cluster (``nats_cluster.py``), one PostgreSQL, two
``edgeship hub serve --nats-inbound nats://...`` processes, each on its own node, and a sender publishing
numbered telemetry samples over MQTT for devices whose ids contain ``.`` (NATS turns it into ``//`` in the
subject; the hub turns it back). Counted in the database: every sample sent is stored, none twice.

- both replicas running: each took some of the messages, and neither stored more than it took from the
  stream (nothing arrived over its MQTT subscriptions: it has none for devices' messages);
- one replica is SIGKILLed with a batch fetched and not acknowledged (the fault point before a telemetry
  store): the server gives that batch to the survivor after the ack wait (``ACK_WAIT``), and nothing is lost;
- the permissions the generated ``users.conf`` gives: a hub user opens the stream, a device cannot log in on
  the NATS port, cannot delete the stream or its consumer over MQTT, and the hub user cannot delete them either.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hub_process import HubProcess
from hub_workspace import make_hub_workspace
from mqtt_probe import Probe
from nats_cluster import NatsCluster
from nats_fleet import fleet_users, replica_logs
from parts import free_port
from replicas import PostgresServer
from simulator import device_ids
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import InputError, TransportError
from edgeship.hub.bridge.nats_inbound import device_topic_of, stream_subjects
from edgeship.hub.broker.nats import INBOUND_CONSUMER, INBOUND_STREAM, NatsUser, hash_password_bcrypt, render_users
from edgeship.hub.faults import BEFORE_TELEMETRY_STORE, FAULT_ENV
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import device_topic

pytestmark = pytest.mark.slow

DEVICES = 40
ROUNDS = 25  # telemetry batches per device, one numbered sample each: 1,000 messages
WAIT = 90.0
TOOK = re.compile(r"took (\d+) device message\(s\) from NATS stream \S+ \((\d+) fetched.*?stored (\d+) in all")


class Sender(threading.Thread):
    """``ROUNDS`` batches per device over MQTT (QoS 1) as ``hub-probe``, a round every ``pause`` seconds."""

    def __init__(self, url: str, devices: list[str], pause: float) -> None:
        super().__init__(name="telemetry-sender", daemon=True)
        self.probe = Probe(url, "hub-probe")
        self.devices, self.pause = devices, pause
        self.sent: set[tuple[str, int]] = set()
        self.start_time = datetime(2026, 12, 5, tzinfo=timezone.utc)

    def run(self) -> None:
        for round_ in range(1, ROUNDS + 1):
            for device in self.devices:
                at = (self.start_time + timedelta(seconds=round_)).isoformat().replace("+00:00", "Z")
                sample = {"time": at, "seq": round_, "cpuPercent": 1.0, "memoryBytes": 1024, "modules": {}}
                batch = {"schemaVersion": 1, "deviceId": device, "dropped": 0, "samples": [sample]}
                self.probe.client.publish(device_topic(device, "telemetry"), json.dumps(batch), qos=1)
                self.sent.add((device, round_))
            time.sleep(self.pause)

    def close(self) -> None:
        self.probe.client.disconnect()
        self.probe.client.loop_stop()


def _stored(db_url: str) -> list[tuple[str, int]]:
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT device_id, batch FROM telemetry").fetchall()
    found: list[tuple[str, int]] = []
    for device, batch in rows:
        data = batch if isinstance(batch, dict) else json.loads(batch)
        found += [(device, int(s["seq"])) for s in data["samples"]]
    return found


def _wait_stored(db_url: str, sent: set[tuple[str, int]], replicas: list[HubProcess]) -> list[tuple[str, int]]:
    deadline = time.monotonic() + WAIT
    while not sent <= set(stored := _stored(db_url)):
        assert time.monotonic() < deadline, (f"{len(sent - set(stored))} of {len(sent)} samples never stored:\n"
                                             + replica_logs(replicas))  # fmt: skip
        time.sleep(0.5)
    return stored


def _took(replica: HubProcess) -> tuple[int, int]:
    """(messages it took from the stream, messages it stored in all), from the line a clean stop logs."""
    found = TOOK.findall(replica.log.read_text())
    assert found, f"{replica.name} logged no count of its share:\n{replica.log.read_text()[-3000:]}"
    acknowledged, _fetched, handled = (int(n) for n in found[-1])
    return acknowledged, handled


@pytest.fixture
def world(tmp_path: Path, postgres: PostgresServer) -> Iterator[dict[str, Any]]:
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=1)
    ids = device_ids("dev.", 0, DEVICES)
    db = postgres.fresh_database()
    with HubServer(HubConfig(workspace=ws.root, db_url=db, embedded_broker=True, broker_port=0, port=0)) as seed:
        seed.services.fleet.create_devices((d, {"site": "lab"}) for d in ids)
    users = fleet_users(ids)
    logs = tmp_path / "logs"
    logs.mkdir()
    with NatsCluster(tmp_path / "nats", users) as cluster:
        replicas = [HubProcess(ws.root, cluster.urls[i], logs / f"hub-{i}.log", username=f"hub-{i}", password="hub-pw",
                               db_url=db, extra=("--nats-inbound", f"nats://127.0.0.1:{cluster.nodes[i].client_port}"))
                    for i in range(2)]  # fmt: skip
        try:
            yield {"cluster": cluster, "replicas": replicas, "ids": ids, "db": db}
        finally:
            for replica in replicas:
                replica.stop()


def test_two_replicas_share_the_devices_messages_and_each_is_stored_once(world: dict[str, Any]) -> None:
    cluster: NatsCluster = world["cluster"]
    replicas: list[HubProcess] = world["replicas"]
    for replica in replicas:
        replica.start(wait=False)
    for replica in replicas:
        replica.wait_ready()
    sender = Sender(cluster.urls[2].replace("mqtt://", "mqtt://hub-probe:hub-pw@"), world["ids"], pause=0.1)
    sender.start()
    try:
        sender.join(WAIT)
        stored = _wait_stored(world["db"], sender.sent, replicas)
    finally:
        sender.close()
    assert len(stored) == len(set(stored)) == len(sender.sent), "a sample was stored twice, or one never sent"
    for replica in replicas:
        replica.stop()  # a clean stop logs the replica's share
    shares = [_took(replica) for replica in replicas]
    for (acknowledged, handled), replica in zip(shares, replicas, strict=True):
        assert acknowledged > 0, f"{replica.name} took no message: the load was not shared {shares}"
        assert handled <= acknowledged, f"{replica.name} stored messages that came over MQTT too: {shares}"
    assert sum(a for a, _h in shares) >= len(sender.sent), shares


def test_a_replica_killed_with_a_batch_fetched_loses_none_of_it(world: dict[str, Any]) -> None:
    cluster: NatsCluster = world["cluster"]
    victim, survivor = world["replicas"]
    victim.start(**{FAULT_ENV: BEFORE_TELEMETRY_STORE})  # SIGKILLs itself before storing the first sample it took
    sender = Sender(cluster.urls[2].replace("mqtt://", "mqtt://hub-probe:hub-pw@"), world["ids"], pause=0.02)
    sender.start()
    try:
        deadline = time.monotonic() + WAIT
        while victim.alive():
            assert time.monotonic() < deadline, f"{victim.name} never took a message:\n{replica_logs([victim])}"
            time.sleep(0.1)
        assert "fault injection" in victim.log.read_text()  # it died holding a fetched, unacknowledged message
        survivor.start()  # the batch the victim fetched is the survivor's once the ack wait has passed
        sender.join(WAIT)
        stored = _wait_stored(world["db"], sender.sent, [victim, survivor])
    finally:
        sender.close()
    assert len(stored) == len(set(stored)) == len(sender.sent), "a sample was stored twice, or one never sent"


def test_a_hub_user_opens_the_stream_and_a_device_can_neither_log_in_nor_delete_it(world: dict[str, Any]) -> None:
    import nats
    from nats.errors import Error as NatsError

    cluster: NatsCluster = world["cluster"]
    replica = world["replicas"][0]
    replica.start()  # creates the stream and its consumer
    node, device = cluster.nodes[1], world["ids"][0]
    probe = Probe(cluster.urls[1].replace("mqtt://", f"mqtt://{device}:dev-pw@"), device.replace(".", "~"))
    api = "$JS/API"
    for topic in (f"{api}/STREAM/DELETE/{INBOUND_STREAM}", f"{api}/CONSUMER/DELETE/{INBOUND_STREAM}/{INBOUND_CONSUMER}",
                  f"{api}/STREAM/PURGE/{INBOUND_STREAM}"):  # fmt: skip
        probe.client.publish(topic, b"", qos=1).wait_for_publish(10)  # NATS acknowledges a denied publish too
    probe.client.disconnect()
    probe.client.loop_stop()

    async def check() -> dict[str, Any]:
        url = f"nats://{node.host}:{node.client_port}"
        with pytest.raises(NatsError, match=r"[Aa]uthorization"):
            await nats.connect(url, user=device, password="dev-pw", max_reconnect_attempts=0, allow_reconnect=False)
        hub = await nats.connect(url, user="hub-1", password="hub-pw")
        try:
            js = hub.jetstream(timeout=3.0)
            info = await js.stream_info(INBOUND_STREAM)
            consumer = await js.consumer_info(INBOUND_STREAM, INBOUND_CONSUMER)
            with pytest.raises(NatsError):  # not among the hub's JetStream subjects: no answer
                await js.delete_stream(INBOUND_STREAM)
            return {"subjects": info.config.subjects, "replicas": info.config.num_replicas,
                    "consumer": consumer.config.durable_name}  # fmt: skip
        finally:
            await hub.close()

    found = asyncio.run(check())
    assert found == {"subjects": stream_subjects(), "replicas": 3, "consumer": INBOUND_CONSUMER}


def test_the_generated_users_give_the_stream_to_hubs_only() -> None:
    text = render_users([NatsUser("hub-0", hash_password_bcrypt("a")), NatsUser("dev.1", hash_password_bcrypt("b"))])
    entries = {entry["user"]: entry for entry in (json.loads(line) for line in text.splitlines()
                                                  if line.strip().startswith("{"))}  # fmt: skip
    hub, device = entries["hub-0"], entries["dev.1"]
    assert hub["allowed_connection_types"] == ["MQTT", "STANDARD"] and device["allowed_connection_types"] == ["MQTT"]
    assert any(s.startswith("$JS.API.CONSUMER.MSG.NEXT.") for s in hub["permissions"]["publish"])
    assert not any(s.startswith("$JS") for s in device["permissions"]["publish"] + device["permissions"]["subscribe"])
    assert not any("DELETE" in s or "PURGE" in s for s in hub["permissions"]["publish"])


def test_a_subject_turns_back_into_the_device_topic() -> None:
    topic = device_topic_of("edgeship.v1.devices.dev//0//1.telemetry")
    assert topic is not None and (topic.device_id, topic.channel) == ("dev.0.1", "telemetry")
    assert device_topic_of("edgeship.v1.devices.dev//1.desired") is not None  # a channel the stream never holds
    assert device_topic_of("$MQTT.sub.x") is None and device_topic_of("edgeship.v1.devices.a b.online") is None


def test_bad_nats_inbound_options_and_an_absent_server_are_clear_errors(tmp_path: Path) -> None:
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=0)
    serve = ["hub", "serve", "-w", str(ws.root), "--broker", "mqtt://127.0.0.1:1", "--port", "0"]
    for options, message in (
        (["--broker-username", "hub-0", "--nats-inbound", "http://127.0.0.1:4222"], r"is not a NATS address"),
        (["--broker-username", "hub-0", "--nats-inbound", "nats://127.0.0.1"], r"give nats://HOST:PORT"),
        (["--broker-username", "hub-0", "--nats-inbound", "nats://u:p@127.0.0.1:4222"], r"must not carry a login"),
        (["--nats-inbound", "nats://127.0.0.1:4222"], r"--nats-inbound needs --broker URL and --broker-username"),
    ):  # fmt: skip
        result = CliRunner().invoke(app, [*serve, *options])
        assert isinstance(result.exception, InputError), result.output
        assert re.search(message, str(result.exception)), str(result.exception)
    absent = f"nats://127.0.0.1:{free_port()}"
    config = HubConfig(workspace=ws.root, embedded_broker=True, broker_port=0, port=0, nats_inbound=(absent,))
    with pytest.raises(TransportError, match=rf"could not log in to NATS at {absent} .*check the address"):
        HubServer(config).start()
