"""Telemetry batches per second and hub CPU per batch, the hub alone: two code trees side by side in one run (ADR 0052).

No broker and no devices: the hub's inbound worker (``Subscriber``, as the MQTT bridge and ``--nats-inbound``
feed it) over a fresh database holding ``--devices`` devices with ``--kept`` kept one-sample batches each
(bulk-inserted; the newest ``KEEP_PER_DEVICE``, as a fleet that has run for a while has). Then ``--rounds``
one-sample batches per device (the next ``seq``; schemaVersion 2 with one module, as agents send), and a copy of
every ``--resend``-th one (a lost confirmation), are handed to the worker ``--chunk`` at a time: the worker takes
what has queued (at most ``BATCH``), and the next chunk is queued once it has stored the last one. A chunk of
1,000 is a hub with a backlog (the worker takes up to 1,000, the NATS inbound fetches up to 1,000); smaller chunks
are a hub that keeps up.

Timed from the first message queued to the last stored; CPU seconds of the hub process (every thread: the
worker, and the queueing, which is the same in both) and of PostgreSQL's processes over that window. Each
configuration runs in its own process with ``PYTHONPATH`` on a shadow tree of one code tree (as
``scripts/typecheck`` lays it out), so an older commit runs from a ``git worktree`` of it::

    git worktree add /tmp/before <commit before ADR 0052>
    python benchmarks/fleet/telemetry_ingest.py --tree before=/tmp/before --tree after=. --repeat 2

Every run checks its result: each message was confirmed to its device, and the history counts each new sample
once. Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
T0 = datetime(2026, 12, 6, tzinfo=timezone.utc)


def _batch(device: str, seq: int) -> dict[str, Any]:
    module = {"version": 1, "requests": 10, "errors": 0, "serverErrors": 0, "clientErrors": 0,
              "latencyMs": {"p50": 3.0, "p95": 7.0, "p99": 12.0}}
    sample = {"time": (T0 + timedelta(seconds=30 * seq)).isoformat().replace("+00:00", "Z"), "seq": seq,
              "cpuPercent": 10.0, "memoryBytes": 64 << 20, "modules": {"digits": module}}
    return {"schemaVersion": 2, "deviceId": device, "dropped": 0, "samples": [sample]}


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    sys.path.insert(0, str(HERE))
    from cluster import tree_cpu

    return tree_cpu(pid)


# one configuration, in its own process (--worker) ---------------------------------------------------------------
def worker(args: argparse.Namespace) -> dict[str, Any]:
    from hub_world import HubWorld
    from memory_link import MemoryLink
    from sqlalchemy import func, insert, select

    from edgeship.hub.bridge.limits import ChannelLimit, InboundLimits
    from edgeship.hub.bridge.subscriber import Subscriber
    from edgeship.hub.store.history import HistoryRow
    from edgeship.hub.store.telemetry import TelemetryRow
    from edgeship.mqtt import parse_device_topic

    link = MemoryLink()
    hub = HubWorld(Path(args.tmp)).services(args.db, link=link)
    ids = [f"dev-{n:05d}" for n in range(args.devices)]
    hub.fleet.create_devices((d, None) for d in ids)
    ranged = "seq_min" in TelemetryRow.__table__.c
    with hub.store.engine.begin() as conn:  # the kept batches, as a fleet that has run for a while has them
        rows = []
        for seq in range(1, args.kept + 1):
            for d in ids:
                row = {"device_id": d, "received": T0, "batch": _batch(d, seq)}
                rows.append({**row, "seq_min": seq, "seq_max": seq} if ranged else row)
        conn.execute(insert(TelemetryRow.__table__), rows)
    messages: list[tuple[Any, bytes]] = []
    fresh = 0
    for r in range(1, args.rounds + 1):
        for n, d in enumerate(ids):
            topic = parse_device_topic(f"edgeship/v1/devices/{d}/telemetry")
            seq = args.kept + r
            messages.append((topic, json.dumps(_batch(d, seq)).encode()))
            fresh += 1
            if args.resend and (r * len(ids) + n) % args.resend == 0:
                messages.append((topic, json.dumps(_batch(d, seq - 1)).encode()))  # a copy of its previous batch
    unlimited = ChannelLimit(max_bytes=256 * 1024, rate=float("inf"), burst=10**9)
    subscriber = Subscriber(hub.fleet, InboundLimits(queue_bytes=1 << 40, device_queue_bytes=1 << 40,
                                                     telemetry=unlimited))
    subscriber.start()
    pg_before, cpu_before, start = _cpu(args.pg_pid), time.process_time(), time.perf_counter()
    for i in range(0, len(messages), args.chunk):
        done = threading.Event()
        for topic, payload in messages[i:i + args.chunk]:
            subscriber.on_message(topic, payload)
        subscriber.submit(done.set)
        done.wait()
    wall, cpu, pg = time.perf_counter() - start, time.process_time() - cpu_before, _cpu(args.pg_pid) - pg_before
    subscriber.stop()
    with hub.store._tx() as s:
        counted = s.scalar(select(func.coalesce(func.sum(HistoryRow.samples), 0)))
    problems = []
    if len(link.confirmed) != len(messages):
        problems.append(f"{len(link.confirmed)} of {len(messages)} messages confirmed")
    if counted != fresh:
        problems.append(f"the history counts {counted} samples, {fresh} were new")
    return {"messages": len(messages), "copies": len(messages) - fresh, "wall": wall, "cpu": cpu, "pg_cpu": pg,
            "problems": problems, "code": str(Path(sys.modules[Subscriber.__module__].__file__ or "?").resolve())}


# the driver -----------------------------------------------------------------------------------------------------
def shadow(tree: Path, into: Path) -> str:
    """A PYTHONPATH on which ``edgeship`` (with ``edgeship.hub`` = ``cloud-stub``) is ``tree``'s, as installed."""
    package = into / "edgeship"
    package.mkdir(parents=True)
    for entry in (tree / "edgeship").iterdir():
        (package / entry.name).symlink_to(entry)
    for name, folder in (("agent", "agent"), ("packager", "packager"), ("fpga", "fpga"), ("hub", "cloud-stub")):
        (package / name).symlink_to(tree / folder)
    return os.pathsep.join([str(into), str(tree / "tests"), str(tree / "tests" / "hub")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="a code tree to measure (repeatable); default: this one, as 'this'")
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--kept", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--resend", type=int, default=10, help="a copy of every N-th batch (0: none)")
    parser.add_argument("--chunk", type=int, nargs="+", default=[1000, 50])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--pg-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.chunk = args.chunk[0]
        print(json.dumps(worker(args)))
        return
    trees = [(name, Path(path).resolve()) for name, path in (t.split("=", 1) for t in args.tree)] or [("this", REPO)]
    sys.path.insert(0, str(REPO / "tests"))
    from postgres_server import PostgresServer

    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="telemetry-ingest-")))
        paths = {name: shadow(tree, scratch / "shadow" / name) for name, tree in trees}
        pg = stack.enter_context(PostgresServer()) if "postgresql" in args.backend else None
        pg_pid = None
        if pg is not None:
            sys.path.insert(0, str(HERE))
            from cluster import postmaster_pid

            pg_pid = postmaster_pid(pg)
        print(f"load average at the start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for repeat in range(args.repeat):
            for backend in args.backend:
                for chunk in args.chunk:
                    for name, _tree in trees:  # the trees one after another for each setting: compared in one run
                        tmp = scratch / f"{name}-{backend}-{chunk}-{repeat}"
                        tmp.mkdir()
                        db = f"sqlite:///{tmp / 'hub.db'}" if backend == "sqlite" or pg is None else pg.fresh_database()
                        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--db", db,
                                   "--tmp", str(tmp), "--devices", str(args.devices), "--kept", str(args.kept),
                                   "--rounds", str(args.rounds), "--resend", str(args.resend),
                                   "--chunk", str(chunk)]
                        if backend == "postgresql" and pg_pid is not None:
                            command += ["--pg-pid", str(pg_pid)]
                        env = {**os.environ, "PYTHONPATH": paths[name]}
                        done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True,
                                              check=False)
                        if done.returncode != 0:
                            raise SystemExit(f"{name} on {backend} failed:\n{done.stderr[-3000:]}")
                        result = {"tree": name, "backend": backend, "chunk": chunk, "repeat": repeat,
                                  **json.loads(done.stdout.strip().splitlines()[-1])}
                        results.append(result)
                        print(_row(result), flush=True)
        print(f"load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print("\n| tree | database | chunk | batches (copies) | stored in | batches/s | hub CPU ms per batch "
          "| PostgreSQL CPU ms per batch |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        print(_row(result))
    if args.report is not None:
        args.report.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "report"},
                                           "trees": {n: str(t) for n, t in trees}, "results": results},
                                          indent=2, default=str))


def _row(r: dict[str, Any]) -> str:
    n = r["messages"]
    pg = f"{1000 * r['pg_cpu'] / n:.2f}" if r["backend"] == "postgresql" else "-"
    flag = f" PROBLEM: {'; '.join(r['problems'])}" if r["problems"] else ""
    return (f"| {r['tree']} | {r['backend']} | {r['chunk']} | {n:,} ({r['copies']:,}) | {r['wall']:.2f} s "
            f"| {n / r['wall']:.0f} | {1000 * r['cpu'] / n:.2f} | {pg} |{flag}")


if __name__ == "__main__":
    main()
