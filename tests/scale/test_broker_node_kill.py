"""A 3-node NATS cluster loses a node (SIGKILL) while the hub delivers a release; every device ends on it.

Real parts only: ``nats-server`` x3 configured by ``edgeship.hub.broker.nats`` (R3
streams and consumers, per-device users and permissions; device ids with ``.``), a hub
(``HubServer``, MQTT 3.1.1 on the node that stays up), simulated devices
(``benchmarks/fleet/simulator.py``: each verifies its document as an agent does and
reports it, retained, QoS 1), each logged in as itself, half on the node that is killed,
and a few real agent links (``MqttLink``) with the cluster's three addresses. A probe
records every document each device is sent.

What is asserted: the links and the simulated devices reach a surviving node and subscribe
again; every simulated device ends on the release's document (the newest the hub issued for
it, status 200); the hub stored every device's report of it (none lost, counted: the
hub's stored ``lastAppliedSequence`` against what each device applied); and no sequence
carries two contents. Around a node's SIGKILL NATS 2.15 can lose a retained update or a
report on its way to the hub's session (ADR 0039); the hub recovers them when the
devices come back (``edgeship.hub.bridge.resync``, ADR 0044), which is what this test checks.

The simulated devices have no failover of their own: when their node dies the test moves
them to the next node as an agent's link does (``nats_fleet.Devices``: the persistent session resumed,
refused SUBACKs retried, ``online`` ``"1"`` and the last report published again on connect, the
device's state kept); the links do it themselves.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_workspace import make_hub_workspace
from nats_cluster import NatsCluster
from nats_fleet import WAIT, Devices, DocumentLog, retained, sequence_of, unfinished
from simulator import device_ids

from edgeship.agent.link.mqtt import Inbound, MqttLink
from edgeship.hub.api import create_token
from edgeship.hub.broker.nats import NatsUser, hash_password_bcrypt
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import parse_broker_url

pytestmark = pytest.mark.slow

DEVICES = 120
LINKS = 3


def _losses(devices: Devices, log: DocumentLog, probe_url: str, hub: HubServer, headers: dict[str, str]) -> str:
    """Where the broker's retained store and the hub stand (a failure's message; docs/scale.md "A node dies")."""
    desired = {device: sequence_of(payload)[0] for device, payload in retained(probe_url, "desired").items()}
    reports = {device: json.loads(payload)["lastAppliedSequence"]
               for device, payload in retained(probe_url, "reported").items()}  # fmt: skip
    held = {d.device_id: d.last_applied or 0 for d in devices.all()}  # 0: none applied yet
    status = httpx.get(f"{hub.api_url}/deployments/lab-2", headers=headers, timeout=30).json()["status"]
    return (f"of {len(held)} devices: {sum(held[d] == log.latest(d) for d in held)} on the latest document; "
            f"retained document older than issued: {sum(desired.get(d, 0) < (log.latest(d) or 0) for d in held)}; "
            f"retained report older than applied: {sum((reports.get(d) or 0) < held[d] for d in held)}; "
            f"hub: {status['counts']}")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=2)
    ids = device_ids("dev.", 0, DEVICES)
    agents = [f"agent.{i}" for i in range(LINKS)]
    hub_hash, device_hash = hash_password_bcrypt("hub-pw"), hash_password_bcrypt("dev-pw")
    users = [NatsUser("hub", hub_hash), NatsUser("hub-probe", hub_hash)]
    users += [NatsUser(device, device_hash) for device in ids + agents]
    with NatsCluster(tmp_path / "nats", users) as cluster:
        config = HubConfig(workspace=ws.root, broker_url=cluster.urls[2], broker_username="hub",
                           broker_password="hub-pw", port=0)  # fmt: skip
        with HubServer(config) as hub:
            for version in (1, 2):
                hub.services.catalog.upload_from_workspace(ws.root, "digits", version)
            hub.services.fleet.create_devices((d, {"site": "lab"}) for d in ids + agents)
            yield {"cluster": cluster, "hub": hub, "ids": ids, "agents": agents, "token": create_token(hub.store, "t"),
                   "root": hub.services.keys.trust_root}  # fmt: skip


def test_every_device_ends_on_the_release_when_a_broker_node_is_killed_during_delivery(world: dict[str, Any]) -> None:
    cluster: NatsCluster = world["cluster"]
    hub: HubServer = world["hub"]
    headers = {"Authorization": f"Bearer {world['token']}"}
    probe_url = cluster.urls[1].replace("mqtt://", "mqtt://hub-probe:hub-pw@")
    log = DocumentLog(probe_url)
    devices = Devices(cluster.urls[:2], world["ids"], world["root"])
    links: list[tuple[MqttLink, queue.Queue[Inbound]]] = []
    try:
        for index, agent in enumerate(world["agents"]):
            order = cluster.urls[index % 2:] + cluster.urls[:index % 2]  # agent.0 starts on node 0 (killed)
            inbox: queue.Queue[Inbound] = queue.Queue()
            link = MqttLink([parse_broker_url(u, username=agent, password="dev-pw") for u in order], agent, inbox)
            link.start()
            links.append((link, inbox))
        devices.connect()

        def deploy(name: str, version: int, priority: int) -> None:
            created = httpx.post(f"{hub.api_url}/deployments", headers=headers, timeout=60, json={
                "name": name, "targetCondition": "tags.site='lab'", "priority": priority,
                "modules": [{"name": "digits", "version": version}]})  # fmt: skip
            assert created.status_code == 201, created.text

        def on_release(version: int) -> int:
            return sum(1 for d in devices.all()
                       if d.accepted_raw and sequence_of(d.accepted_raw)[1] == [version] and d.last_code == 200)

        deploy("lab-1", 1, 1)
        deadline = time.monotonic() + WAIT
        while on_release(1) < DEVICES:
            assert time.monotonic() < deadline, f"{DEVICES - on_release(1)} devices never applied release 1"
            devices.step(0.2)

        deploy("lab-2", 2, 2)
        devices.step(0.1)  # delivery under way
        cluster.kill(0)
        devices.move(0, cluster.urls[1])  # what each device's link does when its node dies
        deadline = time.monotonic() + WAIT
        while unfinished(devices, hub.store) and time.monotonic() < deadline:
            devices.step(0.5)
        for (link, _inbox), agent in zip(links, world["agents"], strict=True):  # the links reach a node themselves
            wait_until = time.monotonic() + WAIT
            while not link.connected.is_set():
                assert time.monotonic() < wait_until, f"{agent} did not reconnect"
                time.sleep(0.2)
        assert links[0][0].failovers >= 1  # it was on the killed node
        assert all(d.ready for d in devices.all())  # every simulated session subscribed again
        passes = [(len(p.devices), p.documents) for p in hub.bridge.resync.passes]
        print(f"on release 2: {on_release(2)}; recovery passes (devices, documents): {passes}")
        behind = unfinished(devices, hub.store)
        assert not behind, (f"{len(behind)} devices not on the release or their report lost at the hub: "
                            f"{dict(list(behind.items())[:5])}; "
                            f"{_losses(devices, log, probe_url, hub, headers)}")
        status = httpx.get(f"{hub.api_url}/deployments/lab-2", headers=headers, timeout=30).json()["status"]
        assert on_release(2) == DEVICES
        assert status["counts"]["reportingSuccess"] == DEVICES, status
        assert not log.twice(), f"documents with one sequence and two contents: {list(log.twice())[:5]}"
    finally:
        for link, _ in links:
            link.stop()
        devices.close()
        log.close()
