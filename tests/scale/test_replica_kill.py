"""Two hub replicas on one PostgreSQL and one Mosquitto; one is SIGKILLed in the middle of a staged rollout.

Real parts only: ``edgeship hub serve`` processes (``replicas.py``), 200 simulated
devices (``benchmarks/fleet/simulator.py``: each verifies its document as an agent does
and reports it, retained, QoS 1), a telemetry sender publishing numbered samples for
every device, and a probe that records every document each device is sent. The
deployment is created through one replica and watched through the other; the replica
that runs the rollout engine (the coordinator lease holder) is the one killed, while
the telemetry is flowing. The survivor must take the engine over, drain the dead
replica's broker session (its share of the shared subscription) and finish the job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_workspace import make_hub_workspace
from mqtt_probe import Probe, Received
from replicas import PostgresServer, ReplicaGroup
from simulator import device_ids

from edgeship.hub.api import create_token
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import device_topic
from edgeship.signing import TrustRoot

pytestmark = pytest.mark.slow

DEVICES = 200
ROUNDS = 10  # telemetry batches per device (one sample each)
SIMULATOR = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet" / "simulator.py"
WAIT = 120.0


class DocumentLog:
    """Every ``desired`` document each device is sent: (device, sequence) -> the digests of the contents seen."""

    def __init__(self, url: str) -> None:
        self.contents: dict[tuple[str, int], set[str]] = {}
        self.lock = threading.Lock()
        self.probe = Probe(url)
        self.probe.handlers.append(self._on)
        self.probe.subscribe("edgeship/v1/devices/+/desired")

    def _on(self, _probe: Probe, message: Received) -> None:
        if not message.payload:
            return
        document = json.loads(base64.b64decode(json.loads(message.payload)["payload"]))
        with self.lock:
            key = (document["deviceId"], document["sequence"])
            self.contents.setdefault(key, set()).add(hashlib.sha256(message.payload).hexdigest())


class TelemetrySender(threading.Thread):
    """``ROUNDS`` batches per device, one sample each with its own ``seq``, QoS 1, paced over a few seconds."""

    def __init__(self, url: str, devices: list[str], pause: float) -> None:
        super().__init__(name="telemetry-sender", daemon=True)
        self.probe = Probe(url)
        self.devices, self.pause = devices, pause
        self.sent = 0
        self.start_time = datetime(2026, 12, 5, tzinfo=timezone.utc)

    def run(self) -> None:
        for round_ in range(1, ROUNDS + 1):
            for device in self.devices:
                at = self.start_time + timedelta(seconds=round_)
                sample = {"time": at.isoformat().replace("+00:00", "Z"), "seq": round_, "cpuPercent": 1.0,
                          "memoryBytes": 1024, "modules": {}}
                batch = {"schemaVersion": 1, "deviceId": device, "dropped": 0, "samples": [sample]}
                self.probe.client.publish(device_topic(device, "telemetry"), json.dumps(batch), qos=1)
                self.sent += 1
            time.sleep(self.pause)


def _stored_samples(db_url: str) -> set[tuple[str, int]]:
    import psycopg

    plain = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        rows = conn.execute("SELECT device_id, batch FROM telemetry").fetchall()
    found: list[tuple[str, int]] = []
    for device, batch in rows:
        data = batch if isinstance(batch, dict) else json.loads(batch)
        found += [(device, int(s["seq"])) for s in data["samples"]]
    assert len(found) == len(set(found)), "a telemetry sample was stored twice"
    return set(found)


def _behind(db_url: str) -> str:
    """For a failure: each device whose stored report is older than its newest document (what the wave waits for)."""
    import psycopg

    plain = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        rows = conn.execute(
            "SELECT d.device_id, d.sequence, d.issued, r.state->>'lastAppliedSequence', r.received FROM desired d "
            "LEFT JOIN reported r USING (device_id) WHERE d.sequence = (SELECT max(sequence) FROM desired x "
            "WHERE x.device_id = d.device_id) AND (r.state IS NULL OR "
            "(r.state->>'lastAppliedSequence')::int < d.sequence) ORDER BY d.device_id").fetchall()
    lines = [f"{device}: document {seq} issued {issued}, report of {applied} received {received}"
             for device, seq, issued, applied, received in rows[:20]]
    return f"{len(rows)} device(s) whose stored report is older than their document:\n" + "\n".join(lines)


@pytest.fixture
def world(tmp_path: Path, postgres: PostgresServer, mosquitto: Any) -> Iterator[dict[str, Any]]:
    ws, _world = make_hub_workspace(tmp_path / "ws")
    db = postgres.fresh_database()
    ids = device_ids("dev-", 0, DEVICES)
    with HubServer(HubConfig(workspace=ws.root, db_url=db, broker_url=mosquitto.url, port=0)) as hub:
        hub.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        hub.services.fleet.create_devices((d, {"site": "lab"}) for d in ids)
        token = create_token(hub.store, "tests")
        root: TrustRoot = hub.services.keys.trust_root
    (tmp_path / "root.json").write_text(root.to_json())
    group = ReplicaGroup(ws.root, db, mosquitto.url, tmp_path / "logs", count=2)
    sim = subprocess.Popen([sys.executable, str(SIMULATOR), "--broker", mosquitto.url, "--trust-root",
                            str(tmp_path / "root.json"), "--prefix", "dev-", "--count", str(DEVICES)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        group.start()
        yield {"group": group, "db": db, "token": token, "ids": ids, "sim": sim, "broker": mosquitto.url}
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait(10)
        group.stop()


def _sim(sim: subprocess.Popen[str], command: str) -> dict[str, Any]:
    assert sim.stdin is not None and sim.stdout is not None
    sim.stdin.write(json.dumps({"cmd": command}) + "\n")
    sim.stdin.flush()
    while True:
        line = sim.stdout.readline()
        assert line, "the simulator exited"
        answer = json.loads(line)
        if answer.get("event") == command:
            return answer


def _coordinator(group: ReplicaGroup) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leading = [i for i in range(len(group)) if "now runs the periodic work" in group[i].log.read_text()]
        if leading:
            return leading[-1]
        time.sleep(0.2)
    raise AssertionError(f"no replica took the coordinator lease:\n{group.logs()}")


def test_a_rollout_survives_the_sigkill_of_the_replica_running_it(world: dict[str, Any]) -> None:
    group: ReplicaGroup = world["group"]
    sim = world["sim"]
    log = DocumentLog(world["broker"])
    assert json.loads(sim.stdout.readline())["event"] == "started"
    _sim(sim, "connect")
    leader = _coordinator(group)
    other = 1 - leader
    headers = {"Authorization": f"Bearer {world['token']}"}
    through, watch = group[other], group[leader]

    created = httpx.post(f"{watch.url}/deployments", headers=headers, timeout=60, json={
        "name": "lab", "targetCondition": "tags.site='lab'", "priority": 1,
        "modules": [{"name": "digits", "version": 1}],
        "rollout": {"waves": "10%,50%,100%", "soak": 1},
    })
    assert created.status_code == 201, created.text
    sender = TelemetrySender(world["broker"], world["ids"], pause=0.4)
    sender.start()
    deadline = time.monotonic() + WAIT
    while (rollout := httpx.get(f"{through.url}/deployments/lab/rollout", headers=headers, timeout=30).json())[
            "wave"] < 2:
        assert time.monotonic() < deadline, (
            f"{rollout}\n{_sim(sim, 'stats')}\n{_behind(world['db'])}\n{group.logs()}")
        time.sleep(0.2)
    time.sleep(1.0)  # telemetry half sent, wave 2 going out
    group[leader].kill()

    while True:  # the survivor takes the engine over and completes the rollout
        rollout = httpx.get(f"{through.url}/deployments/lab/rollout", headers=headers, timeout=30).json()
        if rollout["state"] == "completed":
            break
        assert rollout["state"] == "rolling-out", rollout
        assert time.monotonic() < deadline, (
            f"rollout stuck: {rollout}\n{_sim(sim, 'stats')}\n{_behind(world['db'])}\n{group.logs()}")
        time.sleep(0.5)
    sender.join(60)
    assert sender.sent == DEVICES * ROUNDS

    status = httpx.get(f"{through.url}/deployments/lab", headers=headers, timeout=30).json()
    expected = {(d, seq) for d in world["ids"] for seq in range(1, ROUNDS + 1)}
    while True:  # every sample stored, the dead replica's share included (drained from its session)
        stored = _stored_samples(world["db"])
        if stored >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert stored == expected, f"{len(expected - stored)} telemetry samples lost\n{group.logs()}"
    counts = _sim(sim, "stats")["counts"]
    assert counts.get("applied", 0) >= DEVICES and not any(k.startswith("refused") for k in counts), counts
    assert status["status"]["counts"]["reportingSuccess"] == DEVICES, status["status"]["counts"]
    with log.lock:
        twice = {key: digests for key, digests in log.contents.items() if len(digests) > 1}
    assert not twice, f"documents with one sequence and two contents: {list(twice)[:5]}"
    assert "draining its broker session" in group[other].log.read_text(), group.logs()
    sim.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
    sim.stdin.flush()
    sim.wait(30)
    log.probe.close()
    sender.probe.close()
