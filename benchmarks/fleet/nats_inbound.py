"""Inbound messages per second and CPU per hub replica on a NATS cluster: one vs two replicas sharing the devices'
messages through the JetStream consumer (``hub serve --nats-inbound``, ADR 0047), beside two replicas over MQTT
(each storing every message), in one run on one cluster and one PostgreSQL.

Per configuration, with a fresh database holding the same devices and fresh hub users (no session of an earlier
configuration): the replicas start (``hub-<i>`` on node ``i % 3``), then this driver publishes ``--rounds``
telemetry batches per device (one numbered sample each, QoS 1, as ``hub-probe`` on node 2) as fast as paho sends
them, and waits until the database holds every sample. Timed from the first publish to the last sample stored;
CPU seconds (user + system, ``/proc``) of each replica, the three nodes together and PostgreSQL over that
window. Rate = messages / that time.

    python benchmarks/fleet/nats_inbound.py                        # 200 devices x 50 rounds = 10,000 messages
    python benchmarks/fleet/nats_inbound.py --devices 50 --rounds 10   # smoke run

Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (REPO / "tests", REPO / "tests" / "hub", REPO / "tests" / "scale", HERE):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from cluster import postmaster_pid, tree_cpu  # noqa: E402
from hub_process import HubProcess  # noqa: E402
from hub_workspace import make_hub_workspace  # noqa: E402
from mqtt_probe import Probe  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from simulator import device_ids  # noqa: E402

from edgeship.hub.broker.nats import NatsUser, hash_password_bcrypt  # noqa: E402
from edgeship.hub.server import HubConfig, HubServer  # noqa: E402
from edgeship.mqtt import device_topic  # noqa: E402

CONFIGS = (("native, 1 replica", 1, True), ("native, 2 replicas", 2, True), ("over MQTT, 2 replicas", 2, False))


def stored(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT coalesce(sum(jsonb_array_length((batch::jsonb)->'samples')), 0) "
                           "FROM telemetry").fetchone()  # fmt: skip
    return int(row[0]) if row else 0


def publish(probe: Probe, ids: list[str], rounds: int) -> int:
    start = datetime(2026, 12, 5, tzinfo=timezone.utc)
    infos = []
    for round_ in range(1, rounds + 1):
        at = (start + timedelta(seconds=round_)).isoformat().replace("+00:00", "Z")
        for device in ids:
            sample = {"time": at, "seq": round_, "cpuPercent": 1.0, "memoryBytes": 1024, "modules": {}}
            batch = {"schemaVersion": 1, "deviceId": device, "dropped": 0, "samples": [sample]}
            infos.append(probe.client.publish(device_topic(device, "telemetry"), json.dumps(batch), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    return len(infos)


def run_config(name: str, count: int, native: bool, first_hub: int, world: dict[str, Any], args: Any) -> dict[str, Any]:
    cluster: NatsCluster = world["cluster"]
    db = world["pg"].fresh_database()
    with HubServer(HubConfig(workspace=world["ws"], db_url=db, embedded_broker=True, broker_port=0, port=0)) as seed:
        seed.services.fleet.create_devices((d, {}) for d in world["ids"])
    replicas = []
    for i in range(count):
        hub, node = first_hub + i, (first_hub + i) % 3
        extra = ("--nats-inbound", f"nats://127.0.0.1:{cluster.nodes[node].client_port}") if native else ()
        replicas.append(HubProcess(world["ws"], cluster.urls[node], world["logs"] / f"hub-{hub}.log",
                                   username=f"hub-{hub}", password="hub-pw", db_url=db, extra=extra))  # fmt: skip
    try:
        for replica in replicas:
            replica.start(wait=False)
        for replica in replicas:
            replica.wait_ready()
        time.sleep(2.0)  # the start's own work (republish, leases) out of the window
        probe = Probe(cluster.urls[2].replace("mqtt://", "mqtt://hub-probe:hub-pw@"), f"hub-probe-{first_hub}")
        pids = {r.name: r.process.pid for r in replicas if r.process is not None}
        nodes = [p.pid for p in cluster.processes if p is not None]
        pg_pid = postmaster_pid(world["pg"])

        def cpu() -> dict[str, float]:
            out = {name: tree_cpu(pid) for name, pid in pids.items()}
            out["nats (3 nodes)"] = sum(tree_cpu(pid) for pid in nodes)
            out["postgres"] = tree_cpu(pg_pid) if pg_pid else 0.0
            return out

        before, began = cpu(), time.monotonic()
        sent = publish(probe, world["ids"], args.rounds)
        published = time.monotonic() - began
        deadline = began + args.timeout
        while (done := stored(db)) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed, after = time.monotonic() - began, cpu()
        probe.client.disconnect()
        probe.client.loop_stop()
        return {"config": name, "messages": sent, "stored": done, "seconds": round(elapsed, 2),
                "publish_seconds": round(published, 2), "per_second": round(done / elapsed),
                "cpu": {k: round(after[k] - before[k], 2) for k in after}}  # fmt: skip
    finally:
        for replica in replicas:
            replica.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50, help="telemetry batches per device")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeship-nats-inbound-") as tmp, PostgresServer() as pg:
        root = Path(tmp)
        ws, _world = make_hub_workspace(root / "ws", modules=0)
        ids = device_ids("dev.", 0, args.devices)
        users = [NatsUser(f"hub-{i}", hash_password_bcrypt("hub-pw")) for i in range(6)]
        users.append(NatsUser("hub-probe", hash_password_bcrypt("hub-pw")))
        (root / "logs").mkdir()
        with NatsCluster(root / "nats", users) as cluster:
            world = {"cluster": cluster, "pg": pg, "ws": ws.root, "ids": ids, "logs": root / "logs"}
            first = 0
            for name, count, native in CONFIGS:
                result = run_config(name, count, native, first, world, args)
                first += count
                results.append(result)
                print(json.dumps(result), flush=True)
    report = {"load_before": load_before, "load_after": os.getloadavg(), "devices": args.devices,
              "rounds": args.rounds, "results": results}  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
