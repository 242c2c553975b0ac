"""Issue 21's combined test: two hub replicas on PostgreSQL, a 3-node NATS cluster, 1,000
simulated devices; during a staged rollout one replica (the one running the rollout engine) and one broker node
are SIGKILLed at once.

Real parts only: ``edgeship hub serve`` x2 on one real PostgreSQL (``--db``, each its own broker user
``hub-<i>`` and persistent session), ``nats-server`` x3 (``edgeship.hub.broker.nats``: R3 streams and
consumers, per-device users), the simulated devices (``benchmarks/fleet/simulator.py``: each verifies its
document as an agent does and reports it), half of them on the node that is killed, moved to another node as
an agent's link moves (``nats_fleet.Devices``), and a probe recording every document each device is sent.

How replicas get inbound traffic on NATS: it speaks MQTT 3.1.1, which has no shared subscriptions, so each
replica subscribes to every device's ``reported``/``telemetry``/``online`` in its own session and stores every
message; the stores are idempotent (a report is an upsert that never goes back a sequence), so the survivor
of a replica's loss already holds everything and there is no session to drain (ADR 0039, ADR 0044). The
replicas connect to the two nodes that stay up: a hub takes one broker address.

Every device also sends telemetry as the agent does (``benchmarks/fleet/sim_telemetry.py``: the agent's on-disk
queue and sender, each batch kept until the hub's ``telemetry-stored`` says it stored it, a copy after 10 s
doubling; ADR 0049): a sample every 30 s (the agent's default interval), from before the kills until the
rollout completed and every device sampled once more after the kills; then every queue must empty.

Asserted: the surviving replica takes the rollout engine over and the rollout completes; every device ends on
its newest document (the release) with status 200; the hub stored every device's report of it (none lost,
counted); no (device, sequence) was ever sent with two contents; no telemetry sample is lost or stored twice:
the (device, seq) pairs in PostgreSQL's ``telemetry`` table are exactly those pushed, each once (counted), and
the hub confirmed telemetry to every device. The devices' queues start as those of agents that have seen this
hub confirm before (``hubConfirms`` in the queue's folder): a new agent counts the broker's PUBACK until its
first confirmation, and in a run that started so, 8 devices lost a sample sent in that window when the node
died. With the confirmations ignored (the PUBACK counts) 168 of 1,089 samples were lost: devices on a node
that stayed up, published just before the other node's SIGKILL, PUBACKed and never delivered to the
surviving replica (ADR 0047).

The issue's 1,000 devices (``EDGESHIP_CLUSTER_DEVICES`` sets another number). Before the generated configs
lifted nats-server 2.15's limit of 1,000 JetStream consumers (ADR 0039 revision 2) a fleet of 1,000 never
finished subscribing. With the limit lifted it passed alone but failed a full CI run (95 devices of a wave
still waiting) and 1 of 2 runs beside busy loops (400 waiting); in the same weeks the 200-device runs failed
the same way now and then. Both causes were then found and fixed (the survivor now issues a dead
coordinator's committed wave; the simulated links reconnect a session a node drops, as agents do; ADR 0037
and ADR 0044 sixth-session revisions), after which 1,000 passed 3 of 3 (65-80 s, one beside two busy loops
at load 7).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_process import HubProcess
from hub_workspace import make_hub_workspace
from nats_cluster import NatsCluster
from nats_fleet import Devices, DocumentLog, fleet_users, replica_logs, sequence_of, unfinished
from replicas import PostgresServer
from sim_telemetry import Telemetry
from simulator import device_ids

from edgeship.hub.api import create_token
from edgeship.hub.broker.nats import NatsSettings
from edgeship.hub.broker.nats_callout import make_issuer
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.store import HubStore

pytestmark = pytest.mark.slow

DEVICES = int(os.environ.get("EDGESHIP_CLUSTER_DEVICES", "1000"))
WAIT = 180.0  # seconds for the rollout to complete after the kills (moving 100 sessions took 42-46 s at load 10)
SAMPLE_EVERY = 30.0  # seconds between one device's telemetry samples (the agent's default): 33 batches/s for 1,000
# devices, each stored by both replicas (together they stored ~130 one-sample batches/s in benchmarks/fleet/RESULTS.md)
RESEND_AFTER = 10.0  # seconds before a sender publishes an unconfirmed batch again (the agent's: 30 s)
DRAIN = 120.0  # seconds for every queued sample to be confirmed after the rollout completed


def _stored_samples(db_url: str) -> Counter[tuple[str, int]]:
    """How often each (device, seq) is in the hub's ``telemetry`` table (the JSON batches as stored)."""
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT device_id, batch FROM telemetry").fetchall()
    stored: Counter[tuple[str, int]] = Counter()
    for device, batch in rows:
        data = batch if isinstance(batch, dict) else json.loads(batch)
        stored.update((device, int(sample["seq"])) for sample in data["samples"])
    return stored


def _samples_lost_or_twice(pushed: list[tuple[str, int]], stored: Counter[tuple[str, int]]) -> str:
    """A failure's message naming the samples lost, stored twice or never pushed; empty when stored == pushed."""
    missing = sorted(set(pushed) - set(stored))
    twice = sorted(key for key, n in stored.items() if n > 1)
    unknown = sorted(set(stored) - set(pushed))
    if not (missing or twice or unknown):
        return ""
    return (f"of {len(pushed)} telemetry samples pushed, {len(missing)} were not stored (first: {missing[:10]}), "
            f"{len(twice)} were stored twice (first: {twice[:10]}), {len(unknown)} stored were never pushed "
            f"(first: {unknown[:10]})")


def _coordinator(replicas: list[HubProcess]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leading = [i for i, r in enumerate(replicas) if "now runs the periodic work" in r.log.read_text()]
        if leading:
            return leading[-1]
        time.sleep(0.2)
    raise AssertionError("no replica took the coordinator lease:\n" + replica_logs(replicas))


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(params=["mqtt-inbound", "auth-callout"])
def world(request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer) -> Iterator[dict[str, Any]]:
    """``mqtt-inbound``: each replica subscribes to every device over MQTT, logins in ``users.conf``.
    ``auth-callout``: the deployment ``docs/scale.md`` recommends, each replica with ``--nats-config-dir`` on the
    cluster's folder, ``--nats-inbound`` (one shared JetStream consumer, ADR 0047) and the folder's auth callout
    (ADR 0051), so every device login, the moved half's included, is decided by a replica, one of them killed."""
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=1)
    ids = device_ids("dev.", 0, DEVICES)
    db = postgres.fresh_database()
    # the devices and the module, through a hub on its own embedded broker (no session left on the cluster)
    with HubServer(HubConfig(workspace=ws.root, db_url=db, embedded_broker=True, broker_port=0, port=0)) as seed:
        seed.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        seed.services.fleet.create_devices((d, {"site": "lab"}) for d in ids)
        token, root = create_token(seed.store, "tests"), seed.services.keys.trust_root
    users = fleet_users(ids)
    logs = tmp_path / "logs"
    logs.mkdir()
    callout = request.param == "auth-callout"
    folder = tmp_path / "nats"
    settings = NatsSettings(auth_callout=make_issuer(_made(folder)).public_key) if callout else NatsSettings()
    with NatsCluster(folder, users, settings=settings) as cluster:
        extra = ("--nats-config-dir", str(folder), *(arg for node in cluster.nodes[1:] for arg in (
            "--nats-inbound", f"nats://{node.host}:{node.client_port}"))) if callout else ()  # fmt: skip
        replicas = [HubProcess(ws.root, cluster.urls[1 + i], logs / f"hub-{i}.log", username=f"hub-{i}",
                               password="hub-pw", db_url=db, extra=extra) for i in range(2)]  # fmt: skip
        store = HubStore(db)
        try:
            for replica in replicas:
                replica.start(wait=False)
            for replica in replicas:
                replica.wait_ready()
            yield {"cluster": cluster, "replicas": replicas, "ids": ids, "token": token, "root": root,
                   "store": store, "db": db, "telemetry": tmp_path / "telemetry", "callout": callout}  # fmt: skip
        finally:
            store.close()
            for replica in replicas:
                replica.stop()


def test_a_rollout_completes_when_a_replica_and_a_broker_node_are_killed_during_it(world: dict[str, Any]) -> None:
    cluster: NatsCluster = world["cluster"]
    replicas: list[HubProcess] = world["replicas"]
    store: HubStore = world["store"]
    headers = {"Authorization": f"Bearer {world['token']}"}
    log = DocumentLog(cluster.urls[2].replace("mqtt://", "mqtt://hub-probe:hub-pw@"))
    # hub_confirms: the queues are those of agents that have seen this hub confirm (ADR 0049), so each batch waits for
    # the hub's telemetry-stored from the first; a new agent counts the broker's PUBACK until its first confirmation.
    telemetry = Telemetry(world["telemetry"], interval=SAMPLE_EVERY, resend_after=RESEND_AFTER, hub_confirms=True)
    # QoS 0 subscriptions, as docs/scale.md configures agents on NATS (ADR 0050): at QoS 1 each of the 2,000
    # subscriptions is a replicated JetStream consumer, and beside a Docker image build (CI, 12-06) the cluster
    # refused 4,779 SUBACKs and left 707 devices unsubscribed after 150 s. Node kills at QoS 1: test_broker_node_kill.
    devices = Devices(cluster.urls[:2], world["ids"], world["root"], telemetry, subscribe_qos=0)
    try:
        devices.connect()
        telemetry.start()  # through the kills until the rollout completed
        deadline = time.monotonic() + WAIT
        while unfinished(devices, store):  # each device applied its first (empty) document and the hub has it
            assert time.monotonic() < deadline, f"{len(unfinished(devices, store))} devices never reported"
            devices.step(0.5)
        leader = _coordinator(replicas)
        survivor = replicas[1 - leader]
        created = httpx.post(f"{survivor.url}/deployments", headers=headers, timeout=60, json={
            "name": "lab", "targetCondition": "tags.site='lab'", "priority": 1,
            "modules": [{"name": "digits", "version": 1}], "rollout": {"waves": "10%,50%,100%", "soak": 1},
        })  # fmt: skip
        assert created.status_code == 201, created.text

        def rollout() -> dict[str, Any]:
            answer = httpx.get(f"{survivor.url}/deployments/lab/rollout", headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        while rollout()["wave"] < 2:  # the second wave (50 %) is going out
            assert time.monotonic() < deadline, f"{rollout()}\n{replica_logs(replicas)}"
            devices.step(0.3)
        before_kill, killed = len(telemetry.pushed), time.monotonic()
        replicas[leader].kill()
        cluster.kill(0)
        devices.move(0, cluster.urls[1])  # what each device's link does when its node dies

        deadline = time.monotonic() + WAIT
        while (state := rollout()["state"]) != "completed" or unfinished(devices, store):
            assert state == "rolling-out" or state == "completed", rollout()
            assert time.monotonic() < deadline, (
                f"rollout {rollout()}; {len(unfinished(devices, store))} devices not on the release or their "
                f"report lost: {dict(list(unfinished(devices, store).items())[:5])}\n"
                f"{devices.describe(list(unfinished(devices, store))[:5])}\n{replica_logs(replicas)}")
            devices.step(0.5)
        while time.monotonic() < killed + SAMPLE_EVERY:  # every device sampled since the kills
            devices.step(0.5)
        telemetry.stop()
        deadline = time.monotonic() + DRAIN
        while pending := telemetry.pending():  # each queue keeps a batch until the hub confirmed it stored it
            assert time.monotonic() < deadline, (
                f"{len(pending)} devices' telemetry never confirmed: {dict(list(pending.items())[:5])}; "
                f"{devices.describe(list(pending)[:5])}\n{replica_logs(replicas)}")
            devices.step(0.5)
        lost = _samples_lost_or_twice(telemetry.pushed, _stored_samples(world["db"]))
        assert not lost, f"{lost}; {telemetry.copies()} batches sent again\n{replica_logs(replicas)}"
        per_device = Counter(device for device, _ in telemetry.pushed)  # under the hub's 100 kept batches each
        assert len(per_device) == DEVICES and max(per_device.values()) < 100, per_device.most_common(3)
        assert before_kill and len({device for device, _ in telemetry.pushed[before_kill:]}) == DEVICES
        assert not telemetry.unconfirmed(), f"the hub confirmed no telemetry to {telemetry.unconfirmed()[:5]}"
        on_release = [d for d in devices.all() if d.accepted_raw and sequence_of(d.accepted_raw)[1] == [1]]
        assert len(on_release) == DEVICES
        status = httpx.get(f"{survivor.url}/deployments/lab", headers=headers, timeout=30).json()["status"]
        assert status["counts"]["reportingSuccess"] == DEVICES, status["counts"]
        assert not log.twice(), f"documents with one sequence and two contents: {list(log.twice())[:5]}"
        assert "now runs the periodic work" in survivor.log.read_text()
        if world["callout"]:  # the moved half logged in again after the kills: through the survivor's callout
            survivor.stop()
            decided = re.search(r"decided \d+ NATS login\(s\): (\d+) allowed, (\d+) refused", survivor.log.read_text())
            assert decided is not None and int(decided[1]) >= DEVICES // 2, decided
    finally:
        devices.close()
        log.close()
