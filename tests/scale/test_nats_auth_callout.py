"""The NATS auth callout binds a device's MQTT client id to its login (ADR 0051), on a real 3-node cluster.

Without it (``users.conf`` logins only) a device that logs in as itself with another
device's client id replaces that device's connection, again and again. Here the nodes
run with ``auth_callout`` and a :class:`NatsAuthCallout` answers as the hub would; every
test logs in over real MQTT and reads the node's verdict from the CONNACK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats_cluster import NatsCluster
from test_nats_permissions import Session, wait

from edgeship.hub.broker.nats import NatsSettings, NatsUser, hash_password_bcrypt
from edgeship.hub.broker.nats_callout import LoginDecider, NatsAuthCallout
from edgeship.hub.broker.nats_jwt import NKey
from edgeship.mqtt import device_topic
from edgeship.mqtt.client import mqtt_client_id

DEV_A, DEV_B = "dev-a", "dev.b"  # dev.b: its client id is dev~b
PASSWORDS = {DEV_A: "pw-a", DEV_B: "pw-b", "hub": "hub-secret"}


@dataclass
class World:
    cluster: NatsCluster
    callout: NatsAuthCallout
    decider: LoginDecider
    logins: dict[str, str]  # what the decider reads: username -> bcrypt hash

    @property
    def url(self) -> str:
        return self.cluster.urls[1]

    def login(self, username: str, password: str | None = None, client_id: str | None = None) -> Session:
        return Session(self.url, username, PASSWORDS.get(username, "?") if password is None else password, client_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("nats-callout")
    issuer = NKey.generate()
    hashes = {name: hash_password_bcrypt(password) for name, password in PASSWORDS.items()}
    users = [NatsUser(name, hashed) for name, hashed in hashes.items()]
    logins = {name: hashed for name, hashed in hashes.items() if name != "hub"}
    decider = LoginDecider(issuer, lambda: logins)
    with NatsCluster(root, users, settings=NatsSettings(auth_callout=issuer.public_key)) as cluster:
        servers = [f"nats://{node.host}:{node.client_port}" for node in cluster.nodes]
        callout = NatsAuthCallout(servers, decider, username="hub", password=PASSWORDS["hub"]).start()
        try:
            yield World(cluster, callout, decider, logins)
        finally:
            callout.stop()


def test_a_device_logs_in_with_its_own_client_id_and_reads_only_its_own_topics(world: World) -> None:
    session = world.login(DEV_B)
    try:
        assert session.accepted, session.connack
        assert session.subscribe(device_topic(DEV_B, "desired")) == [1]
        assert session.subscribe(device_topic(DEV_A, "desired")) == [0x80]  # the permissions came with the JWT
    finally:
        session.close()


def test_an_impostors_client_id_is_refused_and_the_victim_stays_connected(world: World) -> None:
    victim = world.login(DEV_B)
    try:
        assert victim.accepted
        impostor = world.login(DEV_A, client_id=mqtt_client_id(DEV_B))
        try:
            assert not impostor.accepted, "dev-a logged in with dev.b's client id"
            assert impostor.connack in ([], [5], [0x87]) or impostor.disconnects > 0
        finally:
            impostor.close()
        time.sleep(2)  # without the callout the two replaced each other every second
        assert victim.disconnects == 0
        assert victim.subscribe(device_topic(DEV_B, "desired")) == [1]
    finally:
        victim.close()


def test_a_wrong_password_or_an_unknown_device_is_refused(world: World) -> None:
    for session in (world.login(DEV_A, password="wrong"), world.login("dev-z", password="pw-a")):
        try:
            assert not session.accepted
        finally:
            session.close()


def test_a_device_cannot_log_in_over_the_nats_protocol(world: World) -> None:
    import asyncio

    import nats
    from nats.errors import Error as NatsError

    node = world.cluster.nodes[0]

    async def attempt() -> None:
        connection = await nats.connect(f"nats://{node.host}:{node.client_port}", user=DEV_A,
                                        password=PASSWORDS[DEV_A], allow_reconnect=False, connect_timeout=5)
        await connection.close()

    with pytest.raises((NatsError, OSError, asyncio.TimeoutError)):
        asyncio.run(attempt())


def test_a_device_added_to_the_logins_can_log_in_at_once(world: World) -> None:
    world.logins["dev-new"] = hash_password_bcrypt("pw-new")
    PASSWORDS["dev-new"] = "pw-new"
    session = world.login("dev-new")
    try:
        assert session.accepted
    finally:
        session.close()
    del world.logins["dev-new"]
    again = world.login("dev-new")
    try:
        assert not again.accepted
    finally:
        again.close()



def test_a_reload_asks_again_for_every_connection_and_closes_a_removed_devices(world: World) -> None:
    """What the hub's reload after a credential change does under the callout (``ManagedNats`` sends SIGHUP): the
    nodes ask again for each live connection, so a deleted or rotated device is disconnected, the others stay."""
    world.logins["dev-gone"] = hash_password_bcrypt("pw-gone")
    PASSWORDS["dev-gone"] = "pw-gone"
    staying, leaving = world.login(DEV_A), world.login("dev-gone")
    try:
        assert staying.accepted and leaving.accepted
        asked = world.decider.allowed + world.decider.refused
        del world.logins["dev-gone"]
        world.cluster.reload()
        wait(lambda: not leaving.client.is_connected() or leaving.disconnects > 0)
        assert world.decider.allowed + world.decider.refused > asked
        time.sleep(1)
        assert staying.disconnects == 0 and staying.client.is_connected()
    finally:
        staying.close()
        leaving.close()


def test_the_nodes_wait_longer_for_the_callout_than_for_a_password_check(world: World) -> None:
    import json
    import urllib.request

    from edgeship.hub.broker.nats import CALLOUT_AUTH_TIMEOUT

    node = world.cluster.nodes[0]
    with urllib.request.urlopen(f"http://{node.monitor_host}:{node.http_port}/varz", timeout=5) as answer:
        varz = json.loads(answer.read())
    assert varz["auth_timeout"] == CALLOUT_AUTH_TIMEOUT  # NATS's default, 2 s, refused most of a storm (ADR 0051)
