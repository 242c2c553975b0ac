"""Hub replicas, measured: one ``hub serve`` against two on one PostgreSQL, side by side in one run.

For each repetition and each replica count (1, then 2) everything is fresh: a
PostgreSQL database, a Mosquitto (``max_inflight_messages 0``, no persistence), one
workspace, N devices created in-process, then the replicas as ``edgeship hub serve
--db postgresql+psycopg://... --mqtt5 --broker-username hub-<i>`` processes and N
simulated devices (``benchmarks/fleet/simulator.py``, a subprocess). Two phases:

1. **fan-out**: ``POST /deployments`` (every device, no waves) on replica 0; the time
   until ``GET /deployments/<name>`` says N devices report success.
2. **inbound**: one sender publishes ``--batches`` telemetry batches per device (QoS 1,
   as fast as the broker takes them); the time until every batch is a row in the
   ``telemetry`` table. This is the load the replicas share (``$share/hub/...``).

Per phase it records the CPU seconds each part used (the replicas together, Mosquitto,
PostgreSQL's processes, the simulator) from ``/proc``, and the load average at the
start and end of the run. Results go to ``results-<date>.json``; ``RESULTS.md`` says
what they mean.

    python benchmarks/replicas/run.py --devices 1000 --batches 5 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for folder in (REPO / "tests", REPO / "tests" / "hub", REPO / "tests" / "scale", REPO / "benchmarks" / "fleet"):
    sys.path.insert(0, str(folder))

import httpx  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import psycopg  # noqa: E402
from hub_workspace import make_hub_workspace  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from replicas import PostgresServer, ReplicaGroup  # noqa: E402
from simulator import device_ids  # noqa: E402

from edgeship.hub.api import create_token  # noqa: E402
from edgeship.hub.server import HubConfig, HubServer  # noqa: E402
from edgeship.mqtt import device_topic  # noqa: E402

SIMULATOR = REPO / "benchmarks" / "fleet" / "simulator.py"
WAIT = 300.0  # seconds before a phase is declared stuck
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far; 0 for one that is gone."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster and its children (backends, writers)."""
    main = int((server.base / "data" / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout.split()
    return [main, *map(int, children)]


class Parts:
    def __init__(self, group: ReplicaGroup, broker: Mosquitto, pg: PostgresServer, sim: subprocess.Popen[str]):
        self.group, self.broker, self.pg, self.sim = group, broker, pg, sim

    def cpu(self) -> dict[str, float]:
        assert self.broker.process is not None
        return {"replicas": cpu_of([r.process.pid for r in self.group.replicas if r.process is not None]),
                "mosquitto": cpu_of([self.broker.process.pid]), "postgresql": cpu_of(postgres_pids(self.pg)),
                "simulator": cpu_of([self.sim.pid])}


def _sim(sim: subprocess.Popen[str], command: str) -> dict[str, Any]:
    assert sim.stdin is not None and sim.stdout is not None
    sim.stdin.write(json.dumps({"cmd": command}) + "\n")
    sim.stdin.flush()
    while True:
        answer = json.loads(sim.stdout.readline())
        if answer.get("event") == command:
            return answer


def _batch(device: str, seq: int) -> bytes:
    at = datetime(2026, 12, 5, tzinfo=timezone.utc) + timedelta(seconds=seq)
    sample = {"time": at.isoformat().replace("+00:00", "Z"), "seq": seq, "cpuPercent": 1.0, "memoryBytes": 1,
              "modules": {}}
    return json.dumps({"schemaVersion": 1, "deviceId": device, "dropped": 0, "samples": [sample]}).encode()


def _rows(db: str) -> int:
    with psycopg.connect(db.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in after}


@contextlib.contextmanager
def setup(work: Path, pg: PostgresServer, devices: int, replicas: int) -> Iterator[tuple[Parts, str, str, list[str]]]:
    broker = Mosquitto(work / "broker", persistence=False, extra_config="max_inflight_messages 0\nmax_connections -1\n")
    broker.start()
    ws, _world = make_hub_workspace(work / "ws")
    db = pg.fresh_database()
    ids = device_ids("dev-", 0, devices)
    with HubServer(HubConfig(workspace=ws.root, db_url=db, broker_url=broker.url, port=0)) as hub:
        hub.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        hub.services.fleet.create_devices((d, {"site": "lab"}) for d in ids)
        token = create_token(hub.store, "bench")
        (work / "root.json").write_text(hub.services.keys.trust_root.to_json())
    group = ReplicaGroup(ws.root, db, broker.url, work / "logs", count=replicas)
    sim = subprocess.Popen([sys.executable, str(SIMULATOR), "--broker", broker.url, "--trust-root",
                            str(work / "root.json"), "--prefix", "dev-", "--count", str(devices)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert sim.stdout is not None and json.loads(sim.stdout.readline())["event"] == "started"
        group.start()
        _sim(sim, "connect")
        yield Parts(group, broker, pg, sim), db, token, ids
    finally:
        sim.kill()
        sim.wait(10)
        group.stop()
        broker.stop()


def measure(pg: PostgresServer, devices: int, batches: int, replicas: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgeship-replicas-") as tmp, \
            setup(Path(tmp), pg, devices, replicas) as (parts, db, token, ids):
        headers = {"Authorization": f"Bearer {token}"}
        url = parts.group[0].url
        before, started = parts.cpu(), time.monotonic()
        created = httpx.post(f"{url}/deployments", headers=headers, timeout=WAIT, json={
            "name": "bench", "targetCondition": "tags.site='lab'", "priority": 1,
            "modules": [{"name": "digits", "version": 1}]})
        assert created.status_code == 201, created.text
        while httpx.get(f"{url}/deployments/bench", headers=headers, timeout=60).json()[
                "status"]["counts"]["reportingSuccess"] < devices:
            assert time.monotonic() - started < WAIT, "fan-out stuck"
            time.sleep(0.05)
        fanout = {"seconds": round(time.monotonic() - started, 3), "cpu": delta(parts.cpu(), before)}

        sender = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-sender")
        sender.max_inflight_messages_set(1000)
        sender.connect("127.0.0.1", parts.broker.port)
        sender.loop_start()
        total = devices * batches
        before, started = parts.cpu(), time.monotonic()
        infos = [sender.publish(device_topic(d, "telemetry"), _batch(d, seq), qos=1)
                 for seq in range(1, batches + 1) for d in ids]
        published = time.monotonic() - started
        while _rows(db) < total:
            assert time.monotonic() - started < WAIT, f"inbound stuck at {_rows(db)} of {total}"
            time.sleep(0.1)
        inbound = {"seconds": round(time.monotonic() - started, 3), "published_seconds": round(published, 3),
                   "batches": total, "per_second": round(total / (time.monotonic() - started)),
                   "cpu": delta(parts.cpu(), before)}
        assert all(i.rc == 0 for i in infos)
        sender.loop_stop()
        return {"replicas": replicas, "devices": devices, "fanout": fanout, "inbound": inbound}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=5, help="telemetry batches per device in the inbound phase")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "load_start": os.getloadavg(), "runs": []}
    with PostgresServer() as pg:
        for repetition in range(args.repeat):
            for replicas in (1, 2):
                run = measure(pg, args.devices, args.batches, replicas)
                run["repetition"] = repetition + 1
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
    results["load_end"] = os.getloadavg()
    out = args.out or HERE / f"results-{datetime.now(timezone.utc):%Y-%m-%d}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average {results['load_start']} -> {results['load_end']}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
