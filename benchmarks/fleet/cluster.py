"""Issue 21's fleet benchmark: one Mosquitto + one hub beside a 3-node NATS cluster + two hub replicas, one run.

Per device count, with the same simulated fleet on each side (``simulator.py``'s devices behaving as agents'
links do, ``tests/scale/nats_fleet.Devices``: persistent sessions, each device logged in as itself, refused
SUBACKs and silent connects retried, ``online`` and the last report again on every connect), all processes real:

- **mosquitto**: one Mosquitto (``run.py``'s: large queues, no persistence) and one ``edgeship hub serve``
  process (broker user ``hub-0``, persistent session) on a real PostgreSQL;
- **nats**: a 3-node NATS cluster (``tests/scale/nats_cluster.py``, ``edgeship.hub.broker.nats``'s defaults:
  R3 streams and in-memory R3 consumers, per-device users) and two ``edgeship hub serve`` replicas on one real
  PostgreSQL, ``hub-<i>`` on node ``i``, MQTT 3.1.1, each storing every message (ADR 0039, ADR 0044); the
  devices spread over the three nodes;
- **nats-callout** (``--sides nats-callout``): the same cluster in the deployment ``docs/scale.md`` recommends:
  the replicas decide every device login (auth callout, ADR 0051; each device pays one bcrypt check on a hub
  instead of on a node) and share the devices' messages through one JetStream consumer (``--nats-inbound``).

Both hubs use PostgreSQL (one server, a fresh database per side), so what differs is the broker and the
replicas. Timed, per side:

1. **subscribe**: every session connected and SUBACKed (``desired``, ``commands/+/+``; QoS 1 on Mosquitto, and on
   the cluster QoS 0 as agents there are configured, ADR 0050, or 1 with ``--nats-subscribe-qos 1``); then
   **first documents**: until the hub's database holds every device's applied report of its first document;
2. **fan-out**: ``POST /deployments`` (to the last hub: ``hub-1`` on the cluster, the only one beside Mosquitto)
   targeting every device, until the database holds every device's applied report of its new document
   (code 200, ``lastAppliedSequence`` at least the one issued: ``run.py``'s rule, read from PostgreSQL every
   ``POLL`` seconds instead of inside the hub: that bounds the resolution);
3. **reconnect storm**: every device drops its connection and reconnects as a restarted agent (re-verifies its
   retained document, reports again); until every device has its retained document again (``sessions``) and
   the database holds a report from every device received after the storm began (``hub``).

CPU seconds (user + system, ``/proc``, children reaped included) per phase of each broker node, each hub
process (with its signing workers), PostgreSQL (postmaster and backends), the simulators, and this driver
(whose polling of the database is counted under PostgreSQL too).

A phase that does not finish within ``--timeout`` ends that side's run; how far it got is recorded (sessions
subscribed per second, and the time 10,000 would take at that rate).

**QoS 0 evaluation** (``--qos0-devices``; an evaluation, no product change): a fresh cluster, one retained
document published per device, then N persistent sessions subscribe to their ``desired`` with QoS 0 (no
JetStream consumer per subscription); until every SUBACK, then until each has its retained document, then a
reconnect storm.

    python benchmarks/fleet/cluster.py                                  # 200 and 1,000 devices; QoS 0 at 1,000, 10,000
    python benchmarks/fleet/cluster.py --devices 200 --qos0-devices 1000   # smoke run
    python benchmarks/fleet/cluster.py --devices 1000 --nats-max-consumers 1000   # nats-server's own limit, as before
    python benchmarks/fleet/cluster.py --devices 10000 --sides nats,nats-callout --qos0-devices   # the callout's cost
    python benchmarks/fleet/cluster.py --report benchmarks/fleet/results-2026-12-05-cluster.json

Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (REPO / "tests", REPO / "tests" / "hub", REPO / "tests" / "scale", HERE, REPO / "benchmarks" / "broker"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import httpx  # noqa: E402
import nats_fleet  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import run  # noqa: E402
from evaluate import Devices as BareDevices  # noqa: E402  (benchmarks/broker: sessions with an agent's retries)
from evaluate import cpu_seconds, envelope, publish_all  # noqa: E402
from hub_process import HubProcess  # noqa: E402
from hub_workspace import make_hub_workspace  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from run import machine, mosquitto, wait_for_quiet  # noqa: E402
from simulator import KEEPALIVE, Fleet, device_ids  # noqa: E402

from edgeship.hub.api import create_token  # noqa: E402
from edgeship.hub.broker.nats import NatsSettings, NatsUser, hash_password_bcrypt  # noqa: E402
from edgeship.hub.broker.nats_callout import make_issuer  # noqa: E402
from edgeship.hub.server import HubConfig, HubServer  # noqa: E402
from edgeship.hub.store import HubStore  # noqa: E402
from edgeship.signing import TrustRoot  # noqa: E402

PREFIX = "dev-"
HUB_PW = "hub-pw"
DEVICE_PW = "dev-pw"
POLL = 0.2  # seconds between reads of the hub's database while waiting for reports
TARGET = 10_000  # the fleet, for the extrapolations


# Processes and their CPU --------------------------------------------------------------------------
def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` (with its reaped children) and of its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    own: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            child = int(stat.parent.name)
            parents[child] = int(fields[1])
            own[child] = sum(int(v) for v in fields[11:15]) / ticks  # utime stime cutime cstime
    total, wanted = 0.0, {pid}
    changed = True
    while changed:  # descendants, however deep (postmaster -> backends)
        changed = False
        for child, parent in parents.items():
            if parent in wanted and child not in wanted:
                wanted.add(child)
                changed = True
    for member in wanted:
        total += own.get(member, 0.0)
    return total


class Parts:
    """The processes of one side by name (``nats-n0``, ``hub-0``, ``postgres``, ``sim-0`` ...); CPU per phase."""

    def __init__(self) -> None:
        self.pids: dict[str, Callable[[], int | None]] = {}

    def add(self, name: str, pid: Callable[[], int | None]) -> None:
        self.pids[name] = pid

    def snapshot(self) -> dict[str, float]:
        out = {"driver": time.process_time()}
        for name, pid in self.pids.items():
            value = pid()
            out[name] = tree_cpu(value) if value is not None else 0.0
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in after}


def postmaster_pid(pg: PostgresServer) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((pg.base / "data" / "postmaster.pid").read_text().split()[0])
    return None


# The simulated devices, in subprocesses ---------------------------------------------------------------
class SimProcess(run.SimProcess):
    """``cluster.py sim``: devices ``first``..``first+count`` on ``urls`` as agents' links; commands as plain lines
    on stdin (``read`` and ``stop`` are ``run.py``'s)."""

    def __init__(self, urls: Sequence[str], trust_root: Path, first: int, count: int, timeout: float,
                 subscribe_qos: int = 1) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "sim", "--urls", ",".join(urls), "--trust-root",
             str(trust_root), "--first", str(first), "--count", str(count), "--timeout", str(timeout),
             "--subscribe-qos", str(subscribe_qos)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        self.read()

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()


def all_do(sims: Sequence[SimProcess], command: str) -> list[dict[str, Any]]:
    for sim in sims:
        sim.send(command)
    return [sim.read() for sim in sims]


def serve_devices(urls: list[str], ids: list[str], root: TrustRoot, timeout: float, subscribe_qos: int = 1) -> None:
    """The subprocess's loop: step the sessions; run ``connect``, ``reconnect``, ``stats``, ``stop`` from stdin."""
    nats_fleet.WAIT = timeout  # Devices.connect's patience
    devices = nats_fleet.Devices(urls, ids, root, subscribe_qos=subscribe_qos)
    for fleet in devices.fleets:  # each session knows its broker before its first connect: Devices.connect's retry
        for index, device in enumerate(fleet.devices):  # calls reconnect() on sessions a slow first pass never reached
            device.client.connect_async(fleet.settings.host, fleet.settings.port, keepalive=KEEPALIVE,
                                        bind_address=fleet.sources[index % len(fleet.sources)])

    def ready() -> int:
        return sum(1 for d in devices.all() if d.ready)

    def received() -> int:
        return sum(fleet.counts["desired_in"] for fleet in devices.fleets)

    def answer(**data: Any) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    def connect() -> dict[str, Any]:
        started = time.monotonic()
        try:
            devices.connect()
        except AssertionError:  # not all within the timeout: how far it got is the result
            return {"seconds": round(time.monotonic() - started, 3), "ready": ready(), "complete": False}
        return {"seconds": round(time.monotonic() - started, 3), "ready": ready(), "complete": True}

    def reconnect() -> dict[str, Any]:
        started = time.monotonic()
        for fleet in devices.fleets:
            fleet.disconnect()
            for device in fleet.devices:  # restarted agents: each re-verifies its retained document and reports
                device.accepted_raw, device.restarted = None, True
        expected = received() + len(ids)
        result = connect()
        deadline = started + timeout
        while received() < expected and time.monotonic() < deadline:
            devices.step(0.05)
        result.update(seconds=round(time.monotonic() - started, 3), retained=received() - expected + len(ids),
                      complete=bool(result["complete"]) and received() >= expected)  # fmt: skip
        return result

    answer(event="started", devices=len(ids))
    stdin = sys.stdin
    while True:
        readable, _, _ = select.select([stdin], [], [], 0)
        if not readable:
            devices.step(0.05)
            continue
        command = stdin.readline().strip()
        if command in ("", "stop"):
            for fleet in devices.fleets:
                fleet.disconnect()
            devices.close()
            answer(event="stopped")
            return
        if command == "connect":
            answer(event=command, **connect())
        elif command == "reconnect":
            answer(event=command, **reconnect())
        elif command == "stats":
            counts: Counter[str] = sum((fleet.counts for fleet in devices.fleets), Counter())
            answer(event=command, counts=dict(counts), refused_subacks=devices.retries)


# The hub's database, read while waiting -------------------------------------------------------------
def wait_applied(store: HubStore, ids: Sequence[str], expected: dict[str, int], timeout: float) -> tuple[bool, int]:
    """Until every device's stored report is applied (code 200, sequence at least expected); (done, how many)."""
    deadline = time.monotonic() + timeout
    done = 0
    while True:
        reports = store.reported(ids)
        done = 0
        for device in ids:
            record = reports.get(device)
            state = record.state if record is not None else {}
            applied = state.get("lastAppliedSequence")
            if (state.get("status") or {}).get("code") == 200 and isinstance(applied, int) \
                    and applied >= expected.get(device, 1 << 62):  # fmt: skip
                done += 1
        if done == len(ids) or time.monotonic() > deadline:
            return done == len(ids), done
        time.sleep(POLL)


def wait_reported_since(store: HubStore, ids: Sequence[str], since: dt.datetime, timeout: float) -> tuple[bool, int]:
    """Until the hub stored a report from every device received at ``since`` or later; (done, how many)."""
    deadline = time.monotonic() + timeout
    while True:
        reports = store.reported(ids)
        done = 0
        for record in reports.values():
            received = record.received if record.received.tzinfo else record.received.replace(tzinfo=dt.timezone.utc)
            done += received >= since
        if done == len(ids) or time.monotonic() > deadline:
            return done == len(ids), done
        time.sleep(POLL)


# One side ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def seeded(work: Path, db: str, ids: Sequence[str]) -> Iterator[tuple[Path, str, TrustRoot]]:
    """A hub workspace and database holding the devices (tag ``fleet=bench``, first documents) and ``digits`` 1,
    made through a hub on its own embedded broker (so no session is left on the measured broker)."""
    ws, _world = make_hub_workspace(work / "ws", modules=1)
    config = HubConfig(workspace=ws.root, db_url=db, embedded_broker=True, broker_port=0, port=0)
    with HubServer(config) as seed:
        seed.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        seed.services.fleet.create_devices((d, {"fleet": "bench"}) for d in ids)
        token, root = create_token(seed.store, "bench"), seed.services.keys.trust_root
    yield ws.root, token, root


def measure_side(name: str, device_urls: list[str], hubs: list[HubProcess], parts: Parts, db: str,
                 ids: list[str], root: TrustRoot, token: str, work: Path,
                 args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Subscribe, first documents, fan-out and storm for one side whose broker and hubs run."""
    n = len(ids)
    result: dict[str, Any] = {"side": name, "devices": n, "load_start": os.getloadavg(),
                              "subscribe_qos": args.nats_subscribe_qos if name.startswith("nats") else 1}
    store = HubStore(db)
    sims: list[SimProcess] = []
    trust_file = work / f"trust-root-{name}.json"
    trust_file.write_text(root.to_json())
    procs = max(1, min(args.sim_procs, n))
    share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    first = 0
    for index, count in enumerate(share):
        qos = args.nats_subscribe_qos if name.startswith("nats") else 1  # Mosquitto fleets keep QoS 1 (ADR 0050)
        sim = SimProcess(device_urls, trust_file, first, count, args.timeout, qos)
        sims.append(sim)
        parts.add(f"sim-{index}", lambda sim=sim: sim.process.pid)  # type: ignore[misc]
        first += count

    def phase(label: str, work_: Callable[[], dict[str, Any]]) -> bool:
        before, started = parts.snapshot(), time.perf_counter()
        outcome = work_()
        outcome.setdefault("seconds", round(time.perf_counter() - started, 3))
        outcome["cpu"] = parts.delta(before, parts.snapshot())
        outcome["load"] = os.getloadavg()[0]
        result[label] = outcome
        print(f"{name} {n}: {label} {json.dumps(outcome)}", flush=True)
        return bool(outcome.get("complete", True))

    try:
        def subscribe() -> dict[str, Any]:
            answers = all_do(sims, "connect")
            ready = sum(a["ready"] for a in answers)
            seconds = max(a["seconds"] for a in answers)
            return {"seconds": seconds, "ready": ready, "complete": all(a["complete"] for a in answers),
                    "sessions_per_second": round(ready / seconds, 1) if seconds else None,
                    "extrapolated_10000_seconds": round(TARGET * seconds / ready) if ready else None}

        if not phase("subscribe", subscribe):
            return result

        def first_documents() -> dict[str, Any]:
            expected = {d: r.sequence for d, r in store.latest_desired(ids).items()}
            complete, done = wait_applied(store, ids, expected, args.timeout)
            return {"complete": complete, "applied": done}

        if not phase("first_documents", first_documents):
            return result
        time.sleep(args.settle)

        def fanout() -> dict[str, Any]:
            started = time.perf_counter()
            answer = httpx.post(f"{hubs[-1].url}/deployments", headers={"Authorization": f"Bearer {token}"},
                                timeout=args.timeout, json={
                                    "name": "fleet", "targetCondition": "tags.fleet='bench'", "priority": 1,
                                    "modules": [{"name": "digits", "version": 1}]})
            returned = time.perf_counter() - started
            if answer.status_code != 201:
                raise RuntimeError(f"POST /deployments answered {answer.status_code}: {answer.text[:300]}")
            expected = {d: r.sequence for d, r in store.latest_desired(ids).items()}
            complete, done = wait_applied(store, ids, expected, args.timeout)
            return {"seconds": round(time.perf_counter() - started, 3), "post_returned": round(returned, 3),
                    "complete": complete, "applied": done}

        if not phase("fanout", fanout):
            return result
        time.sleep(args.settle)

        def storm() -> dict[str, Any]:
            since = dt.datetime.now(dt.timezone.utc)
            started = time.perf_counter()
            answers = all_do(sims, "reconnect")
            sessions = max(a["seconds"] for a in answers)
            left = max(args.timeout - (time.perf_counter() - started), 1.0)
            complete, done = wait_reported_since(store, ids, since, left)
            return {"seconds": round(time.perf_counter() - started, 3), "sessions": sessions,
                    "retained": sum(a["retained"] for a in answers), "reported": done,
                    "complete": complete and all(a["complete"] for a in answers)}

        phase("storm", storm)
        stats = all_do(sims, "stats")
        result["devices_side"] = {
            "counts": dict(sum((Counter(s["counts"]) for s in stats), Counter())),
            "refused_subacks": sum(s["refused_subacks"] for s in stats),
        }
    finally:
        for sim in sims:
            sim.stop()
        store.close()
        result["load_end"] = os.getloadavg()
    return result


def run_mosquitto_side(ids: list[str], pg: PostgresServer, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    db = pg.fresh_database()
    with seeded(work, db, ids) as (workspace, token, root), mosquitto(work) as (url, pid):
        parts = Parts()
        parts.add("mosquitto", lambda: pid)
        parts.add("postgres", lambda: postmaster_pid(pg))
        hub = HubProcess(workspace, url, work / "hub-0.log", username="hub-0", db_url=db)
        parts.add("hub-0", lambda: hub.process.pid if hub.alive() and hub.process else None)
        hub.start()
        try:
            return measure_side("mosquitto", [url], [hub], parts, db, ids, root, token, work, args)
        finally:
            hub.stop()


def run_nats_callout_side(ids: list[str], pg: PostgresServer, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The deployment ``docs/scale.md`` recommends: the replicas decide every device login (auth callout, ADR 0051)
    with ``--nats-config-dir`` on the cluster's folder, and share the devices' messages with ``--nats-inbound``."""
    return run_nats_side(ids, pg, work, args, callout=True)


def run_nats_side(ids: list[str], pg: PostgresServer, work: Path, args: argparse.Namespace, *,
                  callout: bool = False) -> dict[str, Any]:  # fmt: skip
    db = pg.fresh_database()
    with seeded(work, db, ids) as (workspace, token, root):
        hub_hash, device_hash = hash_password_bcrypt(HUB_PW), hash_password_bcrypt(DEVICE_PW)
        users = [NatsUser(name, hub_hash) for name in ("hub-0", "hub-1")]
        users += [NatsUser(device, device_hash) for device in ids]
        # The product writes no consumer limit (NatsSettings.max_consumers = -1); --nats-max-consumers 1000 puts
        # back nats-server 2.15's default, under which the results of 2026-12-05 without "unlimited" were made.
        settings = NatsSettings() if args.nats_max_consumers is None else NatsSettings(
            max_consumers=args.nats_max_consumers)  # fmt: skip
        folder = work / "nats"
        if callout:
            folder.mkdir(parents=True, exist_ok=True)
            settings = dataclasses.replace(settings, auth_callout=make_issuer(folder).public_key)
        cluster = NatsCluster(folder, users, settings=settings)
        with cluster:
            parts = Parts()
            for index, node in enumerate(cluster.nodes):
                parts.add(f"nats-{node.name}", lambda index=index: cluster.pid(index))  # type: ignore[misc]
            parts.add("postgres", lambda: postmaster_pid(pg))
            extra = ("--nats-config-dir", str(folder), *(arg for node in cluster.nodes for arg in (
                "--nats-inbound", f"nats://{node.host}:{node.client_port}"))) if callout else ()  # fmt: skip
            hubs = [HubProcess(workspace, cluster.urls[i], work / f"hub-{i}.log", username=f"hub-{i}",
                               password=HUB_PW, db_url=db, extra=extra) for i in range(2)]  # fmt: skip
            for hub in hubs:
                parts.add(hub.name, lambda hub=hub: hub.process.pid if hub.alive() and hub.process else None)  # type: ignore[misc]
                hub.start(wait=False)
            try:
                for hub in hubs:
                    hub.wait_ready()
                name = "nats-callout" if callout else "nats"
                return measure_side(name, cluster.urls, hubs, parts, db, ids, root, token, work, args)
            finally:
                for hub in hubs:
                    hub.stop()


# QoS 0 subscriptions on the cluster (evaluation) ------------------------------------------------------
class Qos0Fleet(Fleet):
    """Sessions that subscribe to their ``desired`` with QoS 0: NATS then makes no JetStream consumer for it."""

    def _on_connect(self, client: paho.Client, device: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.counts["connect_refused"] += 1
            return
        client.subscribe(device.desired, 0)


class Qos0Devices(BareDevices):
    """``benchmarks/broker/evaluate.py``'s sessions (an agent's retries), persistent, subscribing with QoS 0."""

    def __init__(self, urls: Sequence[str], ids: Sequence[str]) -> None:
        self.fleets = [Qos0Fleet(url, ids[i::len(urls)], None, verify=False, persistent=True)  # type: ignore[arg-type]
                       for i, url in enumerate(urls)]  # fmt: skip
        self.refused = 0
        self.retried_connects = 0
        self._attempt: dict[str, float] = {}
        for fleet in self.fleets:
            self._count_refusals(fleet)


def qos0_evaluation(n: int, work: Path, timeout: float) -> dict[str, Any]:
    """A fresh cluster; N retained documents; N persistent sessions subscribe with QoS 0; then a storm."""
    ids = device_ids(PREFIX, 0, n)
    result: dict[str, Any] = {"devices": n, "load_start": os.getloadavg()}
    users = [NatsUser("hub-0", hash_password_bcrypt(HUB_PW))]
    with NatsCluster(work / f"qos0-{n}", users) as cluster:
        urls = [url.replace("mqtt://", f"mqtt://hub-0:{HUB_PW}@") for url in cluster.urls]
        pids = lambda: [p.pid for p in cluster.processes if p is not None]  # noqa: E731
        publisher = publish_all(urls[-1], ids, 1)  # one retained document per device, before anyone subscribes
        deadline = time.monotonic() + timeout
        while publisher._out_messages and time.monotonic() < deadline:  # every PUBACK in
            time.sleep(0.1)
        publisher.disconnect()
        publisher.loop_stop()
        devices = Qos0Devices(urls[:-1], ids)  # as evaluate.py: sessions on the first nodes, the publisher on the last

        def received() -> int:
            return sum(fleet.counts["desired_in"] for fleet in devices.fleets)

        def timed(label: str, work_: Callable[[], bool]) -> bool:
            cpu, started = cpu_seconds(pids()), time.monotonic()
            try:
                complete = work_()
            except TimeoutError:
                complete = False
            ready = sum(1 for fleet in devices.fleets for d in fleet.devices if d.ready)
            seconds = time.monotonic() - started
            result[label] = {"seconds": round(seconds, 3), "broker_cpu": round(cpu_seconds(pids()) - cpu, 2),
                             "ready": ready, "received": received(), "complete": complete,
                             "refused_subacks": devices.refused, "retried_connects": devices.retried_connects}
            if label == "subscribe":
                result[label]["sessions_per_second"] = round(ready / seconds, 1) if seconds else None
            print(f"qos0 {n}: {label} {json.dumps(result[label])}", flush=True)
            return complete

        try:
            if timed("subscribe", lambda: devices.connect(timeout) is None) and \
                    timed("retained", lambda: devices.run_until(lambda: received() >= n, timeout)):  # fmt: skip
                for fleet in devices.fleets:
                    fleet.disconnect()
                before = received()

                def storm() -> bool:
                    devices.connect(timeout)
                    return devices.run_until(lambda: received() >= before + n, timeout)

                timed("storm", storm)
        finally:
            devices.close()
    result["load_end"] = os.getloadavg()
    result["document"] = len(envelope(1))
    return result


# Reporting ----------------------------------------------------------------------------------------------
def _cpu(phase: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in phase.get("cpu", {}).items() if v >= 0.01)


def _secs(phase: dict[str, Any] | None, n: int, count: str = "ready") -> str:
    if phase is None:
        return "—"
    if phase.get("complete", True):
        return f"{phase['seconds']:.2f} s"
    got = phase.get(count, phase.get("applied", phase.get("reported", "?")))
    return f"{got} of {n} in {phase['seconds']:.0f} s (stopped)"


def _plain(phase: dict[str, Any] | None, key: str) -> str:
    return f"{phase[key]:.2f} s" if phase and key in phase else "—"


def report(data: dict[str, Any]) -> str:
    rows = ["| devices | side | load start / end | subscribe | first documents | fan-out (POST → all applied) "
            "| POST returned | storm: sessions + retained | storm: hub has every report |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    cpu_rows = ["| devices | side | phase | CPU seconds per part |", "|---:|---|---|---|"]
    for side in data["sides"]:
        n = side["devices"]
        fan, storm = side.get("fanout"), side.get("storm")
        rows.append(
            f"| {n:,} | {side['side']} | {side['load_start'][0]:.2f} / {side['load_end'][0]:.2f} "
            f"| {_secs(side.get('subscribe'), n)} | {_secs(side.get('first_documents'), n, 'applied')} "
            f"| {_secs(fan, n, 'applied')} | {_plain(fan, 'post_returned')} "
            f"| {_plain(storm, 'sessions')} | {_secs(storm, n, 'reported')} |")
        for label in ("subscribe", "first_documents", "fanout", "storm"):
            if label in side:
                cpu_rows.append(f"| {n:,} | {side['side']} | {label} | {_cpu(side[label])} |")
    text = "\n".join(rows) + "\n\nCPU per part and phase (user + system seconds):\n\n" + "\n".join(cpu_rows)
    if data.get("qos0"):
        q = ["| sessions | load start / end | subscribe (QoS 0) | sessions/s | retained documents in "
             "| storm (reconnect + retained) | broker CPU subscribe / storm |",
             "|---:|---|---:|---:|---:|---:|---:|"]
        for r in data["qos0"]:
            n = r["devices"]
            q.append(f"| {n:,} | {r['load_start'][0]:.2f} / {r['load_end'][0]:.2f} | {_secs(r.get('subscribe'), n)} "
                     f"| {r.get('subscribe', {}).get('sessions_per_second', '—')} "
                     f"| {_secs(r.get('retained'), n, 'received')} | {_secs(r.get('storm'), n, 'received')} "
                     f"| {r.get('subscribe', {}).get('broker_cpu', '—')} "
                     f"/ {r.get('storm', {}).get('broker_cpu', '—')} |")
        text += "\n\nNATS with QoS 0 subscriptions (evaluation):\n\n" + "\n".join(q)
    return text


# Entry points ---------------------------------------------------------------------------------------------
def sim_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py sim")
    parser.add_argument("--urls", required=True)
    parser.add_argument("--trust-root", required=True, type=Path)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--subscribe-qos", type=int, choices=(0, 1), default=1)
    args = parser.parse_args(argv)
    root = TrustRoot.from_json(args.trust_root.read_bytes())
    serve_devices(args.urls.split(","), device_ids(PREFIX, args.first, args.count), root, args.timeout,
                  args.subscribe_qos)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        return sim_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="*", default=[200, 1000])
    parser.add_argument("--sides", default="mosquitto,nats", help="which sides to run, in this order: mosquitto, "
                        "nats, nats-callout (the replicas answer the auth callout and share inbound, ADR 0051)")
    parser.add_argument("--qos0-devices", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--nats-max-consumers", type=int,
                        help="diagnostic: jetstream limits default_max_consumers in the nodes' configs (the product "
                             "writes -1, no limit; 1000 is nats-server 2.15's own default)")
    parser.add_argument("--nats-subscribe-qos", type=int, choices=(0, 1), default=0,
                        help="QoS of the devices' subscriptions on the cluster: 0 as docs/scale.md configures agents "
                             "there (ADR 0050); 1 for the runs before it")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take before it stops")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of quiet between phases")
    parser.add_argument("--sim-procs", type=int, default=2, help="simulator processes per side")
    parser.add_argument("--max-load", type=float, default=1.5, help="start each side only below this 1-minute load")
    parser.add_argument("--wait-load", type=float, default=0.0, help="seconds to wait for --max-load (0: do not)")
    parser.add_argument("--output", type=Path, help="results JSON (default: results-<date>-cluster.json here)")
    parser.add_argument("--report", type=Path, help="print the tables of a results JSON and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the brokers and the simulators
    output = args.output or HERE / f"results-{dt.date.today().isoformat()}-cluster.json"
    data: dict[str, Any] = {"command": " ".join(["python", "benchmarks/fleet/cluster.py", *argv]),
                            "machine": machine(), "nats_server": _nats_version(),
                            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "sides": [], "qos0": []}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="edgeship-cluster-bench-"))
    runners = {"mosquitto": run_mosquitto_side, "nats": run_nats_side, "nats-callout": run_nats_callout_side}
    try:
        with PostgresServer() as pg:
            for n in args.devices:
                ids = device_ids(PREFIX, 0, n)
                for side in args.sides.split(","):
                    waited = wait_for_quiet(args.max_load, args.wait_load)
                    folder = work / f"{side}-{n}"
                    folder.mkdir()
                    try:
                        outcome = runners[side](ids, pg, folder, args)
                    except Exception as exc:  # a failed side is a result too
                        outcome = {"side": side, "devices": n, "error": f"{type(exc).__name__}: {exc}",
                                   "load_start": os.getloadavg(), "load_end": os.getloadavg()}
                        print(f"{side} {n}: {outcome['error']}", flush=True)
                    outcome["waited_for_load"] = waited
                    data["sides"].append(outcome)
                    output.write_text(json.dumps(data, indent=2, default=str) + "\n")  # what is done so far
        for n in args.qos0_devices:
            data["qos0"].append(qos0_evaluation(n, work, args.timeout))
            output.write_text(json.dumps(data, indent=2, default=str) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    output.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(report(data))
    print(f"\nwrote {output}")
    return 0


def _nats_version() -> str:
    from nats_cluster import nats_binary

    with contextlib.suppress(Exception):
        return subprocess.run([nats_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return "?"


if __name__ == "__main__":
    sys.exit(main())
