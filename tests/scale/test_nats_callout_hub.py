"""Two ``edgeship hub serve`` replicas answer a real NATS cluster's auth callout (ADR 0051), end to end.

The folder comes from ``edgeship hub broker-config --engine nats --auth-callout`` (the
issuer's seed stays in it, 0600; the node configs hold only its public key), the nodes
start from it, and two replicas on one PostgreSQL serve with ``--nats-config-dir`` and
``--nats-inbound``. Devices are created and deleted over REST; each login goes over real
MQTT. Checked: a device logs in with its own client id and not with another's (while the
other stays connected), the surviving replica answers after the other is SIGKILLed, and
a device deleted through the hub is disconnected and refused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_process import HubProcess
from hub_workspace import make_hub_workspace
from nats_cluster import NatsCluster
from postgres_server import PostgresServer
from test_nats_permissions import Session

from edgeship.hub.broker.nats import NatsFiles, parse_auth_callout
from edgeship.hub.broker.nats_callout import SEED_FILE, load_issuer
from edgeship.mqtt.client import mqtt_client_id

EDGESHIP = [sys.executable, "-m", "edgeship"]
WAIT = 30.0


@dataclass
class Running:
    cluster: NatsCluster
    replicas: list[HubProcess]
    folder: Path
    headers: dict[str, str]

    def create(self, replica: int, device_id: str) -> str:
        answer = httpx.post(f"{self.replicas[replica].url}/devices", json={"id": device_id, "tags": {"site": "lab"}},
                            headers=self.headers, timeout=60)  # fmt: skip
        assert answer.status_code == 201, answer.text
        return str(answer.json()["credentials"]["password"])


def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def accepted(url: str, username: str, password: str, client_id: str | None = None) -> bool:
    session = Session(url, username, password, client_id)
    session.close()
    return session.accepted


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("nats-callout-hub")
    ws, _world = make_hub_workspace(root / "ws", modules=0)
    db = postgres.fresh_database()
    (root / "hub.pw").write_text("hub-secret\n")
    nodes = NatsCluster.pick_nodes(3)
    folder = root / "nats"
    specs = [f"{n.name}={n.host}:{n.client_port},{n.cluster_port},{n.mqtt_port},{n.http_port}" for n in nodes]
    for command in (
        ["hub", "broker-config", "--engine", "nats", "--auth-callout", "-o", str(folder), "-w", str(ws.root), "--db",
         db, "--hub-password-file", str(root / "hub.pw"), "--hub-username", "hub-0", "--hub-username", "hub-1",
         *(arg for spec in specs for arg in ("--nats-node", spec))],
        ["hub", "token", "create", "tests", "-w", str(ws.root), "--db", db],
    ):  # fmt: skip
        result = subprocess.run([*EDGESHIP, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    files = NatsFiles({n.name: folder / f"{n.name}.conf" for n in nodes}, folder / "users.conf")
    inbound = [arg for n in nodes[:2] for arg in ("--nats-inbound", f"nats://{n.host}:{n.client_port}")]
    with NatsCluster.from_files(folder, nodes, files) as cluster:
        replicas = [HubProcess(ws.root, cluster.urls[i], root / f"hub-{i}.log", username=f"hub-{i}",
                               password="hub-secret", db_url=db,
                               extra=("--nats-config-dir", str(folder), *inbound)) for i in range(2)]  # fmt: skip
        try:
            for replica in replicas:
                replica.start()
            yield Running(cluster, replicas, folder, {"Authorization": f"Bearer {token}"})
        finally:
            for replica in replicas:
                replica.stop()


def test_broker_config_keeps_the_issuers_seed_in_the_folder_and_gives_the_nodes_its_public_key(
    running: Running,
) -> None:
    seed = running.folder / SEED_FILE
    assert seed.stat().st_mode & 0o077 == 0
    issuer = load_issuer(seed)
    assert parse_auth_callout((running.folder / "users.conf").read_text()) == (issuer.public_key, ["hub-0", "hub-1"])
    for config in running.cluster.files.configs.values():
        assert issuer.seed not in config.read_text()
    assert issuer.seed not in (running.folder / "users.conf").read_text()


def test_a_device_logs_in_as_itself_and_cannot_take_another_devices_client_id(running: Running) -> None:
    url = running.cluster.urls[2]
    victim_password, impostor_password = running.create(0, "cam.1"), running.create(1, "cam-2")
    assert eventually(lambda: accepted(url, "cam.1", victim_password))  # the other replica learns of it by notice
    assert eventually(lambda: accepted(url, "cam-2", impostor_password))
    victim = Session(url, "cam.1", victim_password)
    try:
        assert victim.accepted
        for _ in range(4):  # each replica answers some: none lets it through
            assert not accepted(url, "cam-2", impostor_password, client_id=mqtt_client_id("cam.1"))
        time.sleep(1)
        assert victim.disconnects == 0 and victim.client.is_connected()
    finally:
        victim.close()


def test_only_a_removed_login_makes_the_hub_reload_the_nodes(running: Running) -> None:
    """With the callout a new login is known to the hubs at once; a reload (every node asks again about every live
    connection) is only for cutting a deleted or rotated device's connection."""

    def reloads() -> int:
        return sum(replica.log.read_text().count("reloaded NATS node") for replica in running.replicas)

    url = running.cluster.urls[1]
    before = reloads()
    password = running.create(0, "cam-4")
    assert eventually(lambda: accepted(url, "cam-4", password))
    assert reloads() == before
    live = Session(url, "cam-4", password)
    try:
        assert live.accepted
        answer = httpx.delete(f"{running.replicas[0].url}/devices/cam-4", headers=running.headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert reloads() >= before + 3  # SIGHUP to each of the three nodes
        # whichever replica the nodes ask: the other one reloads again once it has the change notice
        assert eventually(lambda: live.disconnects > 0 and not live.client.is_connected())
        assert eventually(lambda: not accepted(url, "cam-4", password))
    finally:
        live.close()


def test_the_surviving_replica_answers_logins_and_a_deleted_device_is_disconnected(running: Running) -> None:
    url = running.cluster.urls[0]
    password = running.create(0, "cam-3")
    assert eventually(lambda: accepted(url, "cam-3", password))
    live = Session(url, "cam-3", password)
    try:
        running.replicas[0].kill()
        for _ in range(4):  # the dead replica's subscription is gone: every login reaches the survivor
            assert eventually(lambda: accepted(url, "cam-3", password), timeout=10)
        answer: Any = httpx.delete(f"{running.replicas[1].url}/devices/cam-3", headers=running.headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert eventually(lambda: not live.client.is_connected() or live.disconnects > 0)  # the reload asked again
        assert not accepted(url, "cam-3", password)
    finally:
        live.close()


def test_a_hub_that_cannot_answer_the_callout_does_not_start_and_says_why(running: Running, tmp_path: Path) -> None:
    from edgeship.errors import ConfigError
    from edgeship.hub.broker.nats_reload import ManagedNats
    from edgeship.hub.server import HubConfig, HubServer

    with pytest.raises(ConfigError, match="not 'hub-9'"):  # auth_users change only with a node restart
        ManagedNats(running.folder, hub_username="hub-9", hub_password="x")
    workspace = running.replicas[1].workspace
    config = HubConfig(workspace=workspace, db_url=running.replicas[1].options[1], broker_url=running.cluster.urls[1],
                       broker_username="hub-1", broker_password="hub-secret", nats_config_dir=running.folder,
                       port=0)  # fmt: skip
    with pytest.raises(ConfigError, match="--nats-inbound"):
        HubServer(config).start()
