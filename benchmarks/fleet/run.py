"""Fleet benchmark: from ``create_deployment`` to N devices reported applied, through one Mosquitto.

For each device count and repetition, everything is fresh: a Mosquitto
(``/usr/sbin/mosquitto``, large queues, no connection limit), a hub
(``HubServices`` over SQLite in a temp dir, or ``--postgres URL``) with the hub's
MQTT bridge (``edgeship.hub.bridge.MqttBridge``: its batched retained
publisher and its subscriber), and N simulated devices (``simulator.py``) in
``--sim-procs`` subprocesses, each on one epoll loop. Then, in order:

1. **connect**: the hub creates N devices (``create_devices``, tag ``fleet=bench``),
   each gets its first signed document; the devices connect, receive it retained,
   verify it and report; wait until the hub recorded all N reports.
2. **bare round trip**: one paho client publishes a 2 KB retained QoS 1 message to
   ``edgeship/v1/devices/{id}/commands/ping/r1`` of each device; each device answers
   on ``responses/r1`` (QoS 1, no other work); the time until the client received
   all N answers. The retained pings are cleared afterwards (not timed).
3. **fan-out**: ``create_deployment`` targeting every device by tag; the time until
   the hub recorded N reported states that are applied by ``edgeship.hub.status``'s
   rule (code 200, ``lastAppliedSequence`` at least the new document's); then the
   hub's own ``deployment_status`` is checked (N reportingSuccess; timed apart).
   Phases: re-evaluate+sign+store (inside ``HubStore.issue_many``), hand-off to the
   publisher, the broker's last PUBACK of a document, the last report in at the
   hub, and the last report recorded.
4. **reconnect storm** (``--storm``): every device drops its session and reconnects
   as a restarted agent (re-verifies its retained document and reports again);
   the time until the hub recorded N reports.

Reports reach the fleet service through the bridge's own ``Subscriber``, whose worker
stores whatever has queued up in one transaction (``record_reported_many``); the
benchmark only wraps it to time when reports arrive and when they are stored.

    python benchmarks/fleet/run.py                                   # 1,000 and 10,000, 3 runs each
    python benchmarks/fleet/run.py --devices 1000 --repeat 1 --pause 0   # smoke run
    python benchmarks/fleet/run.py --report benchmarks/fleet/results-2026-11-29.json

Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "hub"))
sys.path.insert(0, str(HERE))

import paho.mqtt.client as paho  # noqa: E402
from floor import next_documents, run_floor  # noqa: E402
from hub_world import HubWorld  # noqa: E402  (signed modules from plain data, as the hub's tests make them)
from parts import free_port  # noqa: E402
from simulator import device_ids  # noqa: E402

from edgeship.hub.bridge import MqttBridge, Subscriber  # noqa: E402
from edgeship.hub.services import HubServices, ModuleRefSpec, Outgoing  # noqa: E402
from edgeship.hub.store import HubStore, ReportedRecord  # noqa: E402
from edgeship.mqtt import TOPIC_ROOT, DeviceTopic, device_topic, parse_broker_url, parse_device_topic  # noqa: E402
from edgeship.mqtt.client import make_client  # noqa: E402
from edgeship.registry.blobs import BlobStore  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
TARGET_SECONDS = 3.0  # 10,000 devices applied
TARGET_RATIO = 2.5  # fan-out over the bare round trip, same run
PING_BYTES = 2048
PREFIX = "dev-"
WAIT = 120.0  # seconds before a phase is declared stuck


# Broker ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text("\n".join([
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "max_connections -1",
        "max_queued_messages 1000000",  # the default 1000 drops acknowledgements at 10,000 devices
        "max_inflight_messages 0",  # no per-session cap on unacknowledged QoS 1 messages
        "set_tcp_nodelay true",  # small packets (PUBACKs, reports) leave at once
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        *(["log_type all"] if os.environ.get("FLEET_BROKER_LOG") else []),
    ]) + "\n")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"mosquitto did not start: {(workdir / 'mosquitto.log').read_text()}") from None
                time.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}", process.pid
    except Exception:
        log = workdir / "mosquitto.log"
        print(f"mosquitto's log:\n{log.read_text()[-3000:] if log.exists() else '(none)'}", file=sys.stderr)
        raise
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# Hub side -------------------------------------------------------------------------------------
class Tracker:
    """Counts recorded reports: applied (code 200, sequence at least the expected one) or just any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: dict[str, int] = {}
        self.done: set[str] = set()
        self.target = 0
        self.any_report = False
        self.finished = threading.Event()
        self.finished_at = 0.0
        self.last_report_in = 0.0
        self.first_report_in = 0.0

    def reset(self, target: int, *, any_report: bool = False) -> None:
        with self.lock:
            self.done = set()
            self.target = target
            self.any_report = any_report
            self.finished.clear()
            self.finished_at = self.last_report_in = self.first_report_in = 0.0

    def expect(self, batch: Sequence[Outgoing]) -> None:
        with self.lock:
            for doc in batch:
                self.expected[doc.device_id] = doc.sequence

    def arrived(self) -> None:
        now = time.perf_counter()
        self.last_report_in = now
        if not self.first_report_in:
            self.first_report_in = now

    def recorded(self, records: Sequence[ReportedRecord]) -> None:
        with self.lock:
            for record in records:
                state = record.state
                status = state.get("status") or {}
                applied = state.get("lastAppliedSequence")
                ok = status.get("code") == 200 and isinstance(applied, int)
                if self.any_report or (ok and applied >= self.expected.get(record.device_id, 1 << 62)):
                    self.done.add(record.device_id)
            if self.target and len(self.done) >= self.target and not self.finished.is_set():
                self.finished_at = time.perf_counter()
                self.finished.set()


class TimedLink:
    """The bridge as the services' ``DeviceLink``, noting each batch's devices and the publisher hand-off time."""

    def __init__(self, bridge: MqttBridge, tracker: Tracker) -> None:
        self.bridge = bridge
        self.tracker = tracker
        self.handoff_seconds = 0.0

    def publish(self, documents: Sequence[Outgoing]) -> None:
        self.tracker.expect(documents)
        t = time.perf_counter()
        try:
            self.bridge.publish(documents)
        finally:
            self.handoff_seconds += time.perf_counter() - t

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        self.bridge.publish_trust_root(message, device_ids)

    def forget(self, device_id: str) -> None:
        self.bridge.forget(device_id)

    def confirm_telemetry(self, device_id: str, seq: int, refused: str | None) -> None:
        self.bridge.confirm_telemetry(device_id, seq, refused)

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        return self.bridge.invoke(device_id, method, args, timeout)


def start_hub(work: Path, broker: str, world: HubWorld, tracker: Tracker, args: argparse.Namespace) -> tuple[
        HubServices, MqttBridge, Subscriber, TimedLink]:
    store = HubStore(args.postgres if args.postgres else f"sqlite:///{work / 'hub.db'}")
    bridge = MqttBridge(parse_broker_url(broker))
    link = TimedLink(bridge, tracker)
    services = HubServices.build(store, BlobStore(work / "blobs", work / "tmp"), world.trust_root(),
                                 [world.hub_key], link)
    bridge.start(services)
    subscriber = bridge.subscriber
    assert subscriber is not None
    # Observe the bridge's own path: when a report reaches the hub, and when its batch is stored.
    inbound = subscriber.on_message

    def on_message(topic: DeviceTopic, payload: bytes) -> None:
        if topic.channel == "reported":
            tracker.arrived()
        inbound(topic, payload)

    subscriber.on_message = on_message  # type: ignore[method-assign]
    store_many = services.fleet.record_reported_many

    def record_reported_many(items: Any) -> Any:
        stored, refused = store_many(items)
        tracker.recorded(stored)
        return stored, refused

    services.fleet.record_reported_many = record_reported_many  # type: ignore[method-assign]
    return services, bridge, subscriber, link


class PubackCounter:
    """Counts the broker's PUBACKs to the hub, in paho's packet handler: the bridge queues documents as
    pre-encoded packets that paho did not book, so paho's ``on_publish`` never sees their PUBACKs."""

    def __init__(self, client: paho.Client) -> None:
        self.count = 0
        self.last = 0.0
        self.thread_cpu = 0.0  # CPU seconds of paho's network thread at the last PUBACK
        handle = client._handle_pubackcomp

        def counted(command: Any) -> Any:
            self.count += 1
            self.last = time.perf_counter()
            self.thread_cpu = time.thread_time()
            return handle(command)

        client._handle_pubackcomp = counted  # type: ignore[method-assign]


class HubCpu:
    """CPU seconds of each of the hub's threads (and of the processes it started), so the issuing path
    (issue, sign, store, publish) and the receiving path (reports in, recorded) are counted apart.

    Roles: ``request`` is the thread that called ``create_deployment``; ``mqtt`` is paho's network
    thread of the bridge (inbound messages, and the documents too while they share that connection);
    ``inbound`` is the subscriber's worker (records reports); ``publisher`` any thread whose name
    starts with ``edgeship-publish``; ``children`` the hub's child processes (signing workers).
    """

    def __init__(self, bridge: MqttBridge, subscriber: Subscriber, others: Sequence[int]) -> None:
        self.bridge = bridge
        self.subscriber = subscriber
        self.others = set(others)  # child processes that are not the hub's (the broker, the simulators)

    def role(self, thread: threading.Thread) -> str:
        if thread is threading.main_thread():
            return "request"
        if thread is getattr(self.bridge.client, "_thread", None):
            return "mqtt"
        if thread is getattr(self.subscriber, "_thread", None):
            return "inbound"
        if thread.name.startswith("edgeship-publish"):
            return "publisher"
        return "other"

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for thread in threading.enumerate():
            if thread.ident is None:
                continue
            try:
                out[self.role(thread)] += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, ProcessLookupError):
                continue  # ended meanwhile
        out["children"] = _children_cpu(self.others)
        out["process"] = time.process_time()
        return dict(out)

    @staticmethod
    def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in sorted(set(before) | set(after))}


def _children_cpu(others: set[int]) -> float:
    """CPU seconds of this process's live children but ``others`` (the hub's signing workers, if any)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me and int(stat.parent.name) not in others:
                total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# Devices --------------------------------------------------------------------------------------
class SimProcess:
    """One simulator subprocess and its JSON-lines control pipe."""

    def __init__(self, broker: str, trust_root: Path, first: int, count: int, *, verify: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "simulator.py"), "--broker", broker, "--trust-root", str(trust_root),
             "--prefix", PREFIX, "--first", str(first), "--count", str(count), *([] if verify else ["--no-verify"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.read()  # "started"

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": command}) + "\n")
        self.process.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited with {self.process.wait()}")
        return json.loads(line)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send("stop")
            self.read()
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class CpuMeter:
    """CPU seconds used by the hub (this process), the simulators and the broker since the last ``take``."""

    def __init__(self, sims: Sequence[SimProcess], broker_pid: int) -> None:
        self.sims = sims
        self.broker_pid = broker_pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.last = self._now()

    def _now(self) -> dict[str, float]:
        fields = Path(f"/proc/{self.broker_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return {
            "hub": time.process_time(),
            "devices": sum(a["cpu"] for a in all_do(self.sims, "stats")),
            "broker": (int(fields[11]) + int(fields[12])) / self.ticks,
            "machine": _machine_busy() / self.ticks,  # every process, ours and others'
            "wall": time.perf_counter(),
        }

    def take(self) -> dict[str, float]:
        now = self._now()
        delta = {k: round(now[k] - self.last[k], 3) for k in now}
        self.last = now
        return delta


def _machine_busy() -> int:
    """Clock ticks all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def all_do(sims: Sequence[SimProcess], command: str) -> list[dict[str, Any]]:
    for sim in sims:
        sim.send(command)
    return [sim.read() for sim in sims]


def bare_round_trip(broker: str, ids: Sequence[str]) -> dict[str, float]:
    """One client: a 2 KB retained QoS 1 message to each device; time until it received every answer."""
    settings = parse_broker_url(broker)
    client = make_client(settings, f"bench-{os.getpid()}", persistent=False, max_inflight=1000, max_queued=0)
    answers = set()
    done = threading.Event()
    subscribed = threading.Event()
    connected = threading.Event()
    acks = [0]

    def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        topic = parse_device_topic(message.topic)
        if topic is not None and topic.channel == "responses":
            answers.add(topic.device_id)
            if len(answers) == len(ids):
                done.set()

    def on_publish(*_a: Any) -> None:
        acks[0] += 1

    client.on_connect = lambda *_a: connected.set()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.on_publish = on_publish
    client.connect(settings.host, settings.port, keepalive=60)
    client.loop_start()
    try:
        assert connected.wait(10)
        client.subscribe(f"{TOPIC_ROOT}/+/responses/+", 1)
        assert subscribed.wait(10)
        payload = b"p" * PING_BYTES
        topics = [f"{device_topic(d, 'commands')}/ping/r1" for d in ids]
        started = time.perf_counter()
        for topic in topics:
            client.publish(topic, payload, qos=1, retain=True)
        handed = time.perf_counter()
        finished = done.wait(WAIT)
        ended = time.perf_counter()
        if not finished:
            raise RuntimeError(f"bare round trip: {len(answers)} of {len(ids)} answers in {WAIT:g} s")
        for topic in topics:  # clear the retained pings, so a reconnect does not deliver them again
            client.publish(topic, b"", qos=1, retain=True)
        deadline = time.monotonic() + WAIT
        while acks[0] < 2 * len(topics) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"seconds": ended - started, "publish_handoff": handed - started}
    finally:
        client.disconnect()
        client.loop_stop()


# One repetition -------------------------------------------------------------------------------
def one_run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"edgeship-fleet-{n}-"))
    result: dict[str, Any] = {"devices": n}
    sims: list[SimProcess] = []
    try:
        with mosquitto(work) as (broker, broker_pid):
            world = HubWorld(work / "world")
            world.root.mkdir(parents=True)
            trust_root = work / "trust-root.json"
            trust_root.write_text(world.trust_root().to_json())
            tracker = Tracker()
            services, bridge, subscriber, link = start_hub(work, broker, world, tracker, args)
            pubacks = PubackCounter(bridge.client)
            stopped = False
            try:
                services.catalog.upload_module(world.module("digits", 1))
                ids = device_ids(PREFIX, 0, n)
                started = time.perf_counter()
                services.fleet.create_devices([(d, {"fleet": "bench"}) for d in ids])
                result["create_devices"] = time.perf_counter() - started

                procs = max(1, min(args.sim_procs, n))
                share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
                first = 0
                for count in share:
                    sims.append(SimProcess(broker, trust_root, first, count, verify=not args.no_verify))
                    first += count
                tracker.reset(n)
                started = time.perf_counter()
                all_do(sims, "connect")
                result["connect_sessions"] = time.perf_counter() - started
                if not tracker.finished.wait(WAIT):
                    raise RuntimeError(f"first documents: {len(tracker.done)} of {n} applied in {WAIT:g} s")
                result["connect_first_document"] = tracker.finished_at - started
                time.sleep(args.settle)

                cpu = CpuMeter(sims, broker_pid)
                result["bare"] = bare_round_trip(broker, ids)
                result["bare"]["cpu"] = cpu.take()
                time.sleep(args.settle)

                cpu.take()
                hub_cpu = HubCpu(bridge, subscriber, [broker_pid, *(sim.process.pid for sim in sims)])
                result["fanout"] = fanout(n, services, link, tracker, pubacks, hub_cpu)
                result["fanout"]["cpu"] = cpu.take()
                status_started = time.perf_counter()
                status = services.deployments.deployment_status("fleet")
                result["fanout"]["status_check"] = time.perf_counter() - status_started
                result["fanout"]["status_counts"] = status.counts()

                if args.storm:
                    time.sleep(args.settle)
                    started = time.perf_counter()
                    answers = all_do(sims, "reconnect-sessions")
                    result["storm_sessions"] = {
                        "seconds": time.perf_counter() - started,
                        "counts": [a["counts"].get("unchanged", 0) for a in answers],
                    }
                    time.sleep(args.settle)
                    tracker.reset(n, any_report=True)
                    started = time.perf_counter()
                    answers = all_do(sims, "reconnect")
                    if not tracker.finished.wait(WAIT):
                        raise RuntimeError(f"reconnect storm: {len(tracker.done)} of {n} reports in {WAIT:g} s")
                    result["storm"] = {
                        "seconds": tracker.finished_at - started,
                        "sessions": max(a["seconds"] for a in answers),
                    }
                if not args.no_floor:
                    time.sleep(args.settle)
                    result["floor"] = floor(n, services, bridge, world, broker, sims, broker_pid)
                    stopped = True
                stats = all_do(sims, "stats")
                result["devices_side"] = {
                    "verify_seconds": sum(s["verify_seconds"] for s in stats),
                    "cpu_seconds": sum(s["cpu"] for s in stats),
                    "counts": dict(sum((collections.Counter(s["counts"]) for s in stats), collections.Counter())),
                }
                result["hub_side"] = {"dropped": subscriber.dropped, "handled": subscriber.handled,
                                      "batches": getattr(subscriber, "batches", None),
                                      "skipped_offline": bridge.publisher.skipped_offline}
                log_file = work / "mosquitto.log"
                log = log_file.read_text() if log_file.exists() else ""
                result["broker_warnings"] = log.splitlines()[:5]
            finally:
                for sim in sims:
                    sim.stop()
                if not stopped:
                    bridge.stop()
                services.store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def fanout(n: int, services: HubServices, link: TimedLink, tracker: Tracker, pubacks: PubackCounter,
           hub_cpu: HubCpu) -> dict[str, Any]:
    store = services.store
    issue_seconds = [0.0]
    original_issue = store.issue_many

    def issue_many(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return original_issue(*a, **k)
        finally:
            issue_seconds[0] += time.perf_counter() - t

    store.issue_many = issue_many
    link.handoff_seconds = 0.0
    tracker.reset(n)
    acks_before = pubacks.count
    try:
        cpu_before = hub_cpu.snapshot()
        started = time.perf_counter()
        services.deployments.create_deployment("fleet", "tags.fleet = 'bench'",
                                               [ModuleRefSpec("digits", 1, {"port": 5001})])
        created = time.perf_counter()
        cpu_created = hub_cpu.snapshot()
        if not tracker.finished.wait(WAIT):
            raise RuntimeError(f"fan-out: {len(tracker.done)} of {n} applied in {WAIT:g} s")
        cpu_done = hub_cpu.snapshot()
    finally:
        store.issue_many = original_issue
    deadline = time.monotonic() + 10
    while pubacks.count - acks_before < n and time.monotonic() < deadline:
        time.sleep(0.01)
    during = hub_cpu.delta(cpu_before, cpu_done)
    request = hub_cpu.delta(cpu_before, cpu_created).get("request", 0.0)
    # paho's network thread writes the documents, reads their PUBACKs and reads the reports: charged to
    # publishing up to the last PUBACK (reports read before it included, so this errs against the hub)
    mqtt_publishing = max(0.0, min(pubacks.thread_cpu - cpu_before.get("mqtt", 0.0), during.get("mqtt", 0.0)))
    issuing = request + during.get("publisher", 0.0) + during.get("children", 0.0) + mqtt_publishing
    return {
        "hub_cpu": {
            "threads": during,  # per role over the whole fan-out
            "request_in_create": request,
            "mqtt_until_last_puback": round(mqtt_publishing, 3),
            # issue + sign + store + hand-off (request thread), the publisher thread, the signing workers, and
            # paho's network thread until the last PUBACK
            "issuing": round(issuing, 3),
            # the subscriber's worker (records reports) and paho's network thread after the last PUBACK
            "receiving": round(during.get("inbound", 0.0) + during.get("mqtt", 0.0) - mqtt_publishing, 3),
        },
        "seconds": tracker.finished_at - started,
        "create_deployment_returned": created - started,
        "issue_sign_store": issue_seconds[0],
        "publisher_handoff": link.handoff_seconds,
        "last_puback": pubacks.last - started,
        "first_report_in": tracker.first_report_in - started,
        "last_report_in": tracker.last_report_in - started,
        "recorded_after_last_in": tracker.finished_at - tracker.last_report_in,
    }


def floor(n: int, services: HubServices, bridge: MqttBridge, world: HubWorld, broker: str,
          sims: Sequence[SimProcess], broker_pid: int) -> dict[str, Any]:
    """The socket-level floor (``floor.py``): the fan-out's documents, next sequence, from a raw socket.

    The hub's bridge is stopped first, so the reports go to the floor's collector alone.
    """
    bridge.stop()
    current = {d: r.envelope.encode() for d, r in services.store.latest_desired().items()}
    documents = next_documents(current, [world.hub_key])
    settings = parse_broker_url(broker)
    cpu = CpuMeter(sims, broker_pid)
    result = run_floor(settings.host, settings.port, documents, timeout=WAIT)
    if len(documents) != n:
        raise RuntimeError(f"floor: {len(documents)} documents for {n} devices")
    out = dataclasses.asdict(result)
    out["cpu_machine"] = cpu.take()
    return out


# Reporting ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mosq = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    import cryptography
    import sqlalchemy

    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "mosquitto": mosq[0] if mosq else "?", "paho": paho.__version__ if hasattr(paho, "__version__") else
        __import__("paho.mqtt").mqtt.__version__, "cryptography": cryptography.__version__,
        "sqlalchemy": sqlalchemy.__version__, "load_before": os.getloadavg(),
    }


def _stat(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f} to {max(values):.2f})"


def report(data: dict[str, Any]) -> str:
    lines = ["| devices | runs | bare round trip | fan-out (create → all applied) | ratio | connect + first doc |"
             + (" reconnect storm (restarted agents) |" if any("storm" in r for r in data["runs"]) else "")
             + (" reconnect storm (sessions only) |" if any("storm_sessions" in r for r in data["runs"]) else ""),
             "|---:|---:|---:|---:|---:|---:|" + ("---:|" if any("storm" in r for r in data["runs"]) else "")
             + ("---:|" if any("storm_sessions" in r for r in data["runs"]) else "")]
    phases = ["| devices | create_deployment returned | issue+sign+store | publisher hand-off | last PUBACK "
              "| first report in | last report in | recorded after last in |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_n: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for run in data["runs"]:
        by_n[run["devices"]].append(run)
    for n, runs in sorted(by_n.items()):
        bare = [r["bare"]["seconds"] for r in runs]
        fan = [r["fanout"]["seconds"] for r in runs]
        ratio = [r["fanout"]["seconds"] / r["bare"]["seconds"] for r in runs]
        row = (f"| {n:,} | {len(runs)} | {_stat(bare)} | {_stat(fan)} | {statistics.median(ratio):.2f}x "
               f"({min(ratio):.2f} to {max(ratio):.2f}) | {_stat([r['connect_first_document'] for r in runs])} |")
        if "storm" in runs[0]:
            row += f" {_stat([r['storm']['seconds'] for r in runs])} |"
        if "storm_sessions" in runs[0]:
            row += f" {_stat([r['storm_sessions']['seconds'] for r in runs])} |"
        lines.append(row)
        keys = ["create_deployment_returned", "issue_sign_store", "publisher_handoff", "last_puback",
                "first_report_in", "last_report_in", "recorded_after_last_in"]
        phases.append(f"| {n:,} | " + " | ".join(
            f"{statistics.median([r['fanout'][k] for r in runs]):.2f} s" for k in keys) + " |")
    text = "\n".join(lines) + "\n\nFan-out phases (medians, seconds from `create_deployment`):\n\n" + "\n".join(phases)
    floor_runs = [r for r in data["runs"] if "floor" in r]
    if floor_runs:
        text += "\n\nPer run: fan-out against the socket-level floor, and the hub's CPU:\n\n" + floor_table(floor_runs)
    return text


def floor_table(runs: Sequence[dict[str, Any]]) -> str:
    rows = ["| devices | run | load start / end | floor | fan-out | ratio | create_deployment returned "
            "| hub CPU issuing (sign, store, publish) | hub CPU receiving | hub CPU all (with workers) | threads |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        fan, cpu = r["fanout"], r["fanout"].get("hub_cpu", {})
        threads = ", ".join(f"{k} {v:.2f}" for k, v in cpu.get("threads", {}).items() if k != "process" and v)
        issuing = f"{cpu.get('issuing', 0):.2f} s"
        rows.append(
            f"| {r['devices']:,} | {r.get('repetition', '')} | {r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} "
            f"| {r['floor']['seconds']:.2f} s | {fan['seconds']:.2f} s | {fan['seconds'] / r['floor']['seconds']:.2f}x "
            f"| {fan['create_deployment_returned']:.2f} s | {issuing} | {cpu.get('receiving', 0):.2f} s "
            f"| {fan['cpu']['hub'] + cpu.get('threads', {}).get('children', 0.0):.2f} s | {threads} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=20.0, help="seconds between runs (ports in TIME_WAIT)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of quiet between phases of a run")
    parser.add_argument("--sim-procs", type=int, default=2, help="simulator processes (devices split evenly)")
    parser.add_argument("--postgres", help="a PostgreSQL URL (postgresql+psycopg://...) with an empty database")
    parser.add_argument("--storm", action="store_true", help="also time a reconnect storm")
    parser.add_argument("--no-floor", action="store_true", help="skip the socket-level floor (floor.py)")
    parser.add_argument("--no-verify", action="store_true",
                        help="diagnostic: devices acknowledge without verifying (the hub and broker alone)")
    parser.add_argument("--max-load", type=float, default=1.5, help="start a run only below this 1-minute load")
    parser.add_argument("--wait-load", type=float, default=0.0,
                        help="seconds to wait for --max-load before each run (0: do not wait)")
    parser.add_argument("--output", type=Path, help="results JSON (default: results-<date>.json here)")
    parser.add_argument("--report", type=Path, help="print the tables of a results JSON and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by Mosquitto and the simulators
    need = max(args.devices) + 1000
    if hard < need:
        print(f"warning: the open-file limit is {hard}; {need} are needed for {max(args.devices)} devices")
    data: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine(),
                            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "options": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    first = True
    for n in args.devices:
        for rep in range(args.repeat):
            if not first and args.pause:
                time.sleep(args.pause)
            first = False
            if args.postgres:
                _reset_postgres(args.postgres)
            waited = wait_for_quiet(args.max_load, args.wait_load)
            load_before = os.getloadavg()
            run = one_run(n, args)
            run["load_before"], run["waited_for_load"] = load_before, waited
            run["repetition"] = rep + 1
            run["load_after"] = os.getloadavg()
            data["runs"].append(run)
            print(json.dumps({k: run[k] for k in ("devices", "repetition", "bare", "fanout", "floor", "load_before",
                                                  "load_after") if k in run}, default=str), flush=True)
    output = args.output or HERE / f"results-{dt.date.today().isoformat()}.json"
    output.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(report(data))
    print(f"\nwrote {output}")
    return 0


def wait_for_quiet(max_load: float, patience: float) -> float:
    """Wait (at most ``patience`` seconds) until the 1-minute load average is below ``max_load``; seconds waited.

    The machine is shared: other engineers' builds and benchmarks take whole cores.
    """
    started = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - started < patience:
        time.sleep(5)
    return round(time.monotonic() - started, 1)


def _reset_postgres(url: str) -> None:
    """Drop the hub's tables and its migration stamp so each run starts empty (the database itself must exist)."""
    from edgeship.hub.store.models import Base

    store = HubStore(url)
    Base.metadata.drop_all(store.engine)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")  # else the next start finds 'head' and no tables
    store.close()


if __name__ == "__main__":
    sys.exit(main())
