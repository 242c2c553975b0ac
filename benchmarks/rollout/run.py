"""Rollout benchmark: a bad release in waves 1 %, 10 %, 100 % to N devices; how far it got, how fast it came back.

Issue 14's targets, at 10,000 simulated devices: the devices that ever received a
document naming the bad release are **no more than the first wave**, and from the
report that trips the abort threshold to the broker having acknowledged the
rollback document of every exposed device takes **≤ 2 s**.

Built on ``benchmarks/fleet`` (imported, not copied): its Mosquitto, its device
simulator (``simulator.py``, N MQTT sessions in ``--sim-procs`` subprocesses that
verify every document with the agent's ``accept_document`` and report
``build_report``'s state) and its hub wiring (``HubServices`` over SQLite with the
hub's ``MqttBridge``). Per device count and repetition, everything is fresh:

1. **baseline**: N devices (tag ``fleet=bench``) and a deployment ``base``
   (``digits:1``); the devices connect, verify it and report it applied.
2. **rollout**: ``create_deployment("release", ..., digits:2, priority 10,
   rollout=waves 1%,10%,100%, abortPercent 10, abortMin 20)``. The simulator's
   :class:`BadRelease` makes a deterministic 20 % of the devices (by
   ``sha256(device id)``, independent of the rollout's own hash order) unable to run
   ``digits:2``: half answer 500 (accepted, ``init()`` failed, ``digits:1`` keeps
   running), half refuse it with 400 (an agent's refusal: the sequence does not move).
   The engine should abort in wave 1 and re-issue ``digits:1`` to every device it
   reached.
3. **watch**: after every exposed device has its rollback document, ``--watch``
   more seconds, so a late document naming the release would still be counted.

Measured (details in ``README.md``):

- **exposure**: distinct devices that received, from the broker, a document naming
  ``digits:2``, counted on the device side (the simulator decodes every document
  it is delivered, retained copies included), against the first wave's size
  (``Rollouts.members``), and whether every exposed device is a wave-1 member.
- **trip → rollback acked**: from the hub's receipt of the report that trips the
  threshold (the bridge subscriber's ``on_message``, the first point where the hub
  holds it) to the broker's PUBACK, on the hub's own publisher session, of the
  rollback document of the last exposed device. The tripping report is found by
  replaying the policy's rule (AWS IoT Jobs' ``abortConfig``: at least ``abortMin``
  executed and more than ``abortPercent`` % of them failed or refused) over the
  rollout members' reports in the order the hub received them. Also: when the
  device sent it, when the engine decided (its ``aborted`` event), and when the
  last exposed device received its rollback document.
- **time to wave 1**: from the ``create_deployment`` call to its return, to the
  last wave-1 document's PUBACK, and to the last wave-1 device receiving it.
- **CPU**: hub (this process), devices, broker and the whole machine over the
  rollout phase; the engine's tick calls (count, wall and thread CPU) when the
  engine has a method the probe knows; ``--profile`` writes a cProfile of them.

    python benchmarks/rollout/run.py --devices 1000 --repeat 1 --pause 0   # smoke (< 1 minute)
    python benchmarks/rollout/run.py                                       # 1,000 and 10,000, 3 runs each
    python benchmarks/rollout/run.py --report benchmarks/rollout/results-2026-12-05.json

Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.util
import inspect
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLEET = REPO / "benchmarks" / "fleet"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fleet = _load("fleet_run", FLEET / "run.py")  # puts tests/, tests/hub and benchmarks/fleet on sys.path
simulator = _load("fleet_simulator", FLEET / "simulator.py")

from hub_world import HubWorld  # noqa: E402

from edgeship.hub.bridge import MqttBridge, Subscriber  # noqa: E402
from edgeship.hub.rollouts import RolloutPolicy  # noqa: E402
from edgeship.hub.services import HubServices, ModuleRefSpec  # noqa: E402
from edgeship.hub.store import HubStore  # noqa: E402
from edgeship.mqtt import parse_broker_url  # noqa: E402
from edgeship.registry.blobs import BlobStore  # noqa: E402

sys.path.insert(0, str(HERE))
from probes import FINAL, MODULE, EngineMeter, Probe, document_facts, find_trip  # noqa: E402

TARGET_ROLLBACK = 2.0  # seconds, trip -> every exposed device's rollback document acknowledged by the broker
GOOD, BAD = 1, 2
WAVES = "1%,10%,100%"
DEPLOYMENT = "release"
WAIT = 120.0  # seconds before a phase is declared stuck
DEFAULT_ABORT_MIN = 20


# Hub ------------------------------------------------------------------------------------------
def start_hub(work: Path, broker: str, world: HubWorld, tracker: Any, args: argparse.Namespace) -> tuple[
        HubServices, MqttBridge, Subscriber, Probe, Callable[[], None]]:
    """The fleet benchmark's hub, with the probes and (when the engine wants one) a timer ticking it."""
    store = HubStore(f"sqlite:///{work / 'hub.db'}")
    bridge = MqttBridge(parse_broker_url(broker))
    link = fleet.TimedLink(bridge, tracker)
    services = HubServices.build(store, BlobStore(work / "blobs", work / "tmp"), world.trust_root(),
                                 [world.hub_key], link)
    bridge.start(services)
    subscriber = bridge.subscriber
    assert subscriber is not None
    probe = Probe()
    probe.attach(bridge, subscriber)
    probe.watch_decisions()
    store_many = services.fleet.record_reported_many

    def record_reported_many(items: Any) -> Any:
        stored, refused = store_many(items)
        probe.stored.append((time.time(), frozenset(r.device_id for r in stored)))
        tracker.recorded(stored)
        return stored, refused

    services.fleet.record_reported_many = record_reported_many  # type: ignore[method-assign]
    stop_timer = start_timer(services, args.rollout_interval)
    return services, bridge, subscriber, probe, stop_timer


def start_timer(services: HubServices, interval: float) -> Callable[[], None]:
    """The hub's rollout loop (``HubServer._start_rollout_engine``): a pass, then wait ``interval`` seconds or
    until the fleet service stored reports (``HubServices.wakeup``); a pass woken by reports is a light one
    (``tick(full=False)``, when the engine has it) unless ``interval`` has passed since the last full pass."""
    engine = getattr(services, "rollouts", None)
    wakeup = getattr(services, "wakeup", None)
    if getattr(engine, "tick", None) is None or interval <= 0:
        return lambda: None
    light = "full" in inspect.signature(engine.tick).parameters
    stop = threading.Event()

    def loop() -> None:
        last_full, woken = 0.0, False
        while not stop.is_set():
            full = not woken or time.monotonic() - last_full >= interval
            try:  # looked up per call, so the EngineMeter's wrapper sees every pass
                if light:
                    engine.tick(full=full)
                else:
                    engine.tick()
            except Exception as exc:  # the hub's loop logs and goes on; so does this one
                print(f"rollout tick failed: {exc!r}", file=sys.stderr)
            if full:
                last_full = time.monotonic()
            if wakeup is not None:
                woken = wakeup.wait(interval)
            else:
                stop.wait(interval)

    thread = threading.Thread(target=loop, name="rollout-timer", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        if wakeup is not None:
            wakeup.set()
        thread.join(5)

    return halt


class SimProcess(fleet.SimProcess):  # type: ignore[misc,name-defined]
    """The fleet benchmark's simulator subprocess, with the bad release switched on."""

    def __init__(self, broker: str, trust_root: Path, first: int, count: int, args: argparse.Namespace) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(FLEET / "simulator.py"), "--broker", broker, "--trust-root", str(trust_root),
             "--prefix", fleet.PREFIX, "--first", str(first), "--count", str(count),
             "--bad-release", f"{MODULE}:{BAD}", "--bad-percent", str(args.bad_percent),
             "--refuse-percent", str(args.refuse_percent)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.read()  # "started"


def release_logs(sims: Sequence[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for answer in fleet.all_do(sims, "release"):
        out.update(answer["release"])
    return out




class ManualAbort:
    """``--no-engine``: the release to every device at once, deleted by a watcher when the abort rule holds.

    What an operator's script could do without rollouts; it checks the harness (and gives
    the exposure without waves). Offers the part of ``Rollouts`` the benchmark reads."""

    def __init__(self, services: HubServices, probe: Probe, policy: Any, ids: Sequence[str]) -> None:
        self.services, self.probe, self.policy = services, probe, policy
        self.ids = {d: 1 for d in ids}
        self.state, self.reason, self.aborted_at = "rolling-out", "", 0.0
        self.tripped: tuple[str, ...] = ()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        services.deployments.create_deployment(DEPLOYMENT, "tags.fleet = 'bench'",
                                               [ModuleRefSpec(MODULE, BAD, {"port": 5001})], 10)

    def _watch(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            time.sleep(0.01)
            bad = {}
            for _h, device_id, envelope, _m in list(self.probe.published):
                sequence, version = document_facts(envelope)
                if version == BAD:
                    bad.setdefault(device_id, sequence)
            trip = find_trip(self.probe, self.ids, bad, self.policy.abort_percent, self.policy.abort_min)
            if trip is not None:
                self.aborted_at = time.time()
                self.services.deployments.delete_deployment(DEPLOYMENT)
                self.state, self.reason, self.tripped = "aborted", f"manual: {trip}", (trip["device"],)
                return

    def show(self, _name: str) -> Any:
        return argparse.Namespace(state=self.state, reason=self.reason, wave=1, tripped=self.tripped)

    def members(self, _name: str) -> dict[str, int]:
        return self.ids

    def events(self, _name: str) -> list[Any]:
        if self.state != "aborted":
            return []
        at = dt.datetime.fromtimestamp(self.aborted_at, dt.timezone.utc)
        return [argparse.Namespace(at=at, action="aborted", state="aborted", reason=self.reason)]


def rollout_policy(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Waves 1%,10%,100% with abortPercent/abortMin; or, when wave 1 is too small for ``abortMin`` executed
    devices (1,000 devices: 10), the careful default (abort on the first failed or refused device)."""
    wave1 = math.ceil(n / 100)
    if args.abort_min is None and wave1 < 5 * DEFAULT_ABORT_MIN:
        return {"waves": WAVES}
    return {"waves": WAVES, "abortPercent": args.abort_percent, "abortMin": args.abort_min or DEFAULT_ABORT_MIN}


# One repetition -------------------------------------------------------------------------------
def one_run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"edgeship-rollout-{n}-"))
    result: dict[str, Any] = {"devices": n}
    sims: list[Any] = []
    policy_dict = rollout_policy(n, args)
    result["policy"] = policy_dict
    try:
        with fleet.mosquitto(work) as (broker, broker_pid):
            world = HubWorld(work / "world")
            world.root.mkdir(parents=True)
            trust_root = work / "trust-root.json"
            trust_root.write_text(world.trust_root().to_json())
            tracker = fleet.Tracker()
            services, bridge, subscriber, probe, stop_timer = start_hub(work, broker, world, tracker, args)
            engine = getattr(services, "rollouts", None)
            meter = EngineMeter(engine, args.profile) if engine is not None else None
            try:
                services.catalog.upload_module(world.module(MODULE, GOOD))
                services.catalog.upload_module(world.module(MODULE, BAD))
                ids = simulator.device_ids(fleet.PREFIX, 0, n)
                services.fleet.create_devices([(d, {"fleet": "bench"}) for d in ids])
                started = time.perf_counter()
                services.deployments.create_deployment("base", "tags.fleet = 'bench'",
                                                       [ModuleRefSpec(MODULE, GOOD, {"port": 5001})])
                result["base_created"] = time.perf_counter() - started
                procs = max(1, min(args.sim_procs, n))
                share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
                first = 0
                for count in share:
                    sims.append(SimProcess(broker, trust_root, first, count, args))
                    first += count
                tracker.reset(n)
                started = time.perf_counter()
                fleet.all_do(sims, "connect")
                if not tracker.finished.wait(WAIT):
                    raise RuntimeError(f"baseline: {len(tracker.done)} of {n} applied in {WAIT:g} s")
                result["baseline_applied"] = tracker.finished_at - started
                time.sleep(args.settle)

                probe.reset()
                cpu = fleet.CpuMeter(sims, broker_pid)
                result["rollout"] = rollout(n, services, sims, probe, meter, RolloutPolicy.from_dict(policy_dict),
                                            args)
                result["rollout"]["cpu"] = cpu.take()
                if meter is not None:
                    result["rollout"]["engine_calls"] = meter.summary(result["rollout"]["t0"])
                    result["rollout"]["engine_wrapped"] = meter.wrapped
                    timeline = meter.timeline(result["rollout"]["t0"])
                    result["rollout"]["engine_timeline"] = timeline
                    aborts = [row for row in timeline if row[0] == "_abort"]
                    if aborts:  # the tick that aborted: when it started, and its parts
                        ticks = [row for row in timeline if row[0] == "tick" and row[1] <= aborts[0][1]]
                        steps = [row for row in timeline if row[0] == "_progress" and row[1] <= aborts[0][1]]
                        result["rollout"]["abort_tick"] = {
                            "started": ticks[-1][1] if ticks else None, "wall": ticks[-1][2] if ticks else None,
                            "progress_wall": steps[-1][2] if steps else None,
                            "progress_cpu": steps[-1][3] if steps else None,
                            "abort_started": aborts[0][1], "abort_wall": aborts[0][2],
                        }
                    if args.profile:
                        result["profile"] = meter.profile_text()
                stats = fleet.all_do(sims, "stats")
                result["devices_side"] = {
                    "cpu_seconds": sum(s["cpu"] for s in stats),
                    "counts": dict(sum((collections.Counter(s["counts"]) for s in stats), collections.Counter())),
                }
                result["hub_side"] = {"dropped": subscriber.dropped, "handled": subscriber.handled,
                                      "skipped_offline": bridge.publisher.skipped_offline}
                log_file = work / "mosquitto.log"
                result["broker_warnings"] = (log_file.read_text() if log_file.exists() else "").splitlines()[:5]
            finally:
                stop_timer()
                for sim in sims:
                    sim.stop()
                bridge.stop()
                services.store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def rollout(n: int, services: HubServices, sims: Sequence[Any], probe: Probe, meter: EngineMeter | None,
            policy: Any, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hub_cpu = time.process_time()
    t0 = time.time()
    out["t0"] = t0
    if args.no_engine:
        rollouts: Any = ManualAbort(services, probe, policy, [d for d in simulator.device_ids(fleet.PREFIX, 0, n)])
    else:
        services.deployments.create_deployment(DEPLOYMENT, "tags.fleet = 'bench'",
                                               [ModuleRefSpec(MODULE, BAD, {"port": 5001})], 10,
                                               rollout=policy, actor="bench")
        rollouts = services.rollouts  # type: ignore[attr-defined]
    out["create_returned"] = time.time() - t0
    # wait on the engine's own state change (or, slowly, poll its events), not on show(): show() classifies every
    # device, which would load the hub being measured
    deadline = time.monotonic() + args.wait
    settled = meter.settled if meter is not None else threading.Event()
    while not settled.wait(0.25) and time.monotonic() < deadline:
        if any(e.action in FINAL for e in rollouts.events(DEPLOYMENT)):
            break
    view = rollouts.show(DEPLOYMENT)
    out["state"], out["reason"], out["wave"] = view.state, view.reason, view.wave
    out["tripped"] = list(view.tripped)
    out["state_seen"] = time.time() - t0
    # wait until every exposed device (device side) has a later document without the release
    deadline = time.monotonic() + (30.0 if view.state == "aborted" else 0.0)
    logs = release_logs(sims)
    while any("cleared_in" not in log for log in logs.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        logs = release_logs(sims)
    out["rollback_seen"] = time.time() - t0
    time.sleep(args.watch)  # a late document naming the release would still be counted
    logs = release_logs(sims)
    out["hub_cpu_seconds"] = time.process_time() - hub_cpu
    members: dict[str, int] = dict(rollouts.members(DEPLOYMENT))
    events = rollouts.events(DEPLOYMENT)
    out["events"] = [{"at": e.at.timestamp() - t0, "action": e.action, "state": e.state, "reason": e.reason}
                     for e in events]
    aborted_at = next((e.at.timestamp() for e in events if e.action == "aborted"), None)
    wave1 = {d for d, w in members.items() if w == 1}
    exposed = set(logs)
    out["wave1_size"] = len(wave1)
    out["members"] = len(members)
    out["exposed"] = len(exposed)
    out["exposed_outside_wave1"] = sorted(exposed - wave1)[:20]
    out["exposed_outside_wave1_count"] = len(exposed - wave1)
    out["exposed_codes"] = dict(collections.Counter(str(log.get("code", 200)) for log in logs.values()))
    out["not_rolled_back"] = sorted(d for d, log in logs.items() if "cleared_in" not in log)[:20]

    # hub side: documents per device, in the order handed to paho
    bad_docs: dict[str, tuple[float, int, int]] = {}  # device -> (handed, sequence, mid) of its first release doc
    rollback_docs: dict[str, tuple[float, int, int]] = {}  # device -> first later doc without the release
    release_published: set[str] = set()
    for handed, device_id, envelope, mid in probe.published:
        sequence, version = document_facts(envelope)
        if version == BAD:
            release_published.add(device_id)
            bad_docs.setdefault(device_id, (handed, sequence, mid))
        elif device_id in bad_docs and device_id not in rollback_docs and sequence > bad_docs[device_id][1]:
            rollback_docs[device_id] = (handed, sequence, mid)
    out["release_documents_published"] = len(release_published)
    wave1_acks = [probe.ack_time(mid, handed) for handed, _s, mid in bad_docs.values()]
    out["wave1"] = {
        "last_handed": max((h for h, _s, _m in bad_docs.values()), default=t0) - t0,
        "last_puback": (max(a for a in wave1_acks if a is not None) - t0) if any(wave1_acks) else None,
        "pubacks_missing": sum(a is None for a in wave1_acks),
        "last_received": (max(log["in"] for log in logs.values()) - t0) if logs else None,
        "first_received": (min(log["in"] for log in logs.values()) - t0) if logs else None,
    }
    trip = find_trip(probe, members, {d: s for d, (_h, s, _m) in bad_docs.items()}, policy.abort_percent,
                     policy.abort_min)
    out["trip"] = None if trip is None else {**trip, "at": trip["at"] - t0}
    engine_rule = find_trip(probe, members, {d: s for d, (_h, s, _m) in bad_docs.items()}, policy.abort_percent,
                            policy.abort_min, count_refused=False)
    out["trip_refusals_pending"] = None if engine_rule is None else {**engine_rule, "at": engine_rule["at"] - t0}
    if trip is not None:
        sent = logs.get(trip["device"], {}).get("reported")
        out["trip"]["device_sent"] = None if sent is None else sent - t0
        stored = probe.stored_at(trip["device"], trip["at"])
        out["trip"]["stored"] = None if stored is None else stored - t0
    out["decisions"] = [(round(t - t0, 4), action, reason, counts) for t, action, reason, counts in probe.decisions
                        if t >= t0]
    rollback_acks = {d: probe.ack_time(mid, handed) for d, (handed, _s, mid) in rollback_docs.items()}
    exposed_acks = [rollback_acks.get(d) for d in exposed]
    received = [log.get("cleared_in") for log in logs.values()]
    all_acked = None if not exposed or any(a is None for a in exposed_acks) else max(exposed_acks)  # type: ignore
    all_received = None if not exposed or any(r is None for r in received) else max(received)  # type: ignore
    out["rollback"] = {
        "documents": len(rollback_docs),
        "exposed_without_rollback_puback": sum(a is None for a in exposed_acks),
        "aborted_event": None if aborted_at is None else aborted_at - t0,
        "first_handed": (min(h for h, _s, _m in rollback_docs.values()) - t0) if rollback_docs else None,
        "last_handed": (max(h for h, _s, _m in rollback_docs.values()) - t0) if rollback_docs else None,
        "all_acked": None if all_acked is None else all_acked - t0,
        "all_received": None if all_received is None else all_received - t0,
    }
    if trip is not None:
        out["trip_to_rollback_acked"] = None if all_acked is None else all_acked - trip["at"]
        out["trip_to_rollback_received"] = None if all_received is None else all_received - trip["at"]
        out["trip_to_abort_event"] = None if aborted_at is None else aborted_at - trip["at"]
    return out


# Reporting ------------------------------------------------------------------------------------
def _stat(values: Sequence[float | None], unit: str = " s") -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    missing = f", {len(values) - len(known)} n/a" if len(known) < len(values) else ""
    return f"{statistics.median(known):.2f}{unit} ({min(known):.2f} to {max(known):.2f}{missing})"


def report(data: dict[str, Any]) -> str:
    lines = ["| devices | runs | state | wave 1 | exposed | outside wave 1 | trip → rollback acked (target ≤ 2 s) "
             "| trip → rollback received | trip → abort event | create → last wave-1 PUBACK | hub CPU |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_n: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for run in data["runs"]:
        by_n[run["devices"]].append(run)
    for n, runs in sorted(by_n.items()):
        r = [run["rollout"] for run in runs]
        states = ", ".join(sorted({x["state"] for x in r}))
        lines.append(
            f"| {n:,} | {len(runs)} | {states} | {'/'.join(str(x['wave1_size']) for x in r)} "
            f"| {'/'.join(str(x['exposed']) for x in r)} "
            f"| {'/'.join(str(x['exposed_outside_wave1_count']) for x in r)} "
            f"| {_stat([x.get('trip_to_rollback_acked') for x in r])} "
            f"| {_stat([x.get('trip_to_rollback_received') for x in r])} "
            f"| {_stat([x.get('trip_to_abort_event') for x in r])} "
            f"| {_stat([x['wave1']['last_puback'] for x in r])} "
            f"| {_stat([x['cpu']['hub'] for x in r])} |")
    phases = ["| devices | create returned | last wave-1 doc handed | last wave-1 PUBACK | last wave-1 received "
              "| trip (report in at hub) | abort event | first rollback handed | last rollback handed "
              "| all rollbacks acked | all received |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, runs in sorted(by_n.items()):
        r = [run["rollout"] for run in runs]
        cells = [
            [x["create_returned"] for x in r], [x["wave1"]["last_handed"] for x in r],
            [x["wave1"]["last_puback"] for x in r], [x["wave1"]["last_received"] for x in r],
            [(x["trip"] or {}).get("at") for x in r], [x["rollback"]["aborted_event"] for x in r],
            [x["rollback"]["first_handed"] for x in r], [x["rollback"]["last_handed"] for x in r],
            [x["rollback"]["all_acked"] for x in r], [x["rollback"]["all_received"] for x in r],
        ]
        phases.append(f"| {n:,} | " + " | ".join(_median(c) for c in cells) + " |")
    return ("\n".join(lines) + "\n\nPhases (medians, seconds from the `create_deployment` call):\n\n"
            + "\n".join(phases))


def _median(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.3f}" if known else "n/a"


def code_version() -> dict[str, Any]:
    """The commit measured, and the product files that differed from it (a shared checkout moves on)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s")[:200],
            "uncommitted": git("status", "--short", "--", "cloud-stub", "edgeship", "agent").splitlines()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=20.0, help="seconds between runs (ports in TIME_WAIT)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of quiet after the baseline")
    parser.add_argument("--watch", type=float, default=3.0,
                        help="seconds to keep counting exposure after every exposed device was rolled back")
    parser.add_argument("--sim-procs", type=int, default=2, help="simulator processes (devices split evenly)")
    parser.add_argument("--bad-percent", type=float, default=20.0, help="devices that cannot run the release")
    parser.add_argument("--refuse-percent", type=float, default=10.0, help="of all devices, those answering 400")
    parser.add_argument("--abort-percent", type=float, default=10.0)
    parser.add_argument("--abort-min", type=int,
                        help=f"default: {DEFAULT_ABORT_MIN}; when wave 1 has fewer than {5 * DEFAULT_ABORT_MIN} "
                        "devices and this is not given, the careful default policy (abort on the first failed or "
                        "refused device)")
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for the rollout to abort, complete or wait for approval")
    parser.add_argument("--rollout-interval", type=float, default=1.0,
                        help="seconds between the engine's timer ticks (HubConfig.rollout_interval)")
    parser.add_argument("--profile", action="store_true", help="cProfile the engine's tick calls")
    parser.add_argument("--no-engine", action="store_true",
                        help="harness check: the release to all devices at once, deleted when the abort rule holds")
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
    data: dict[str, Any] = {"command": " ".join(["benchmarks/rollout/run.py", *sys.argv[1:]]),
                            "machine": fleet.machine(),
                            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "options": {k: str(v) for k, v in vars(args).items()}, "code": code_version(),
                            "load_start": os.getloadavg(), "runs": []}
    first = True
    for n in args.devices:
        for rep in range(args.repeat):
            if not first and args.pause:
                time.sleep(args.pause)
            first = False
            waited = fleet.wait_for_quiet(args.max_load, args.wait_load)
            load_before = os.getloadavg()
            run = one_run(n, args)
            run["load_before"], run["waited_for_load"] = load_before, waited
            run["repetition"] = rep + 1
            run["load_after"] = os.getloadavg()
            data["runs"].append(run)
            r = run["rollout"]
            print(json.dumps({"devices": n, "repetition": rep + 1, "state": r["state"], "wave1": r["wave1_size"],
                              "exposed": r["exposed"], "trip_to_rollback_acked": r.get("trip_to_rollback_acked"),
                              "trip_to_rollback_received": r.get("trip_to_rollback_received"),
                              "hub_cpu": r["cpu"]["hub"], "engine": r.get("engine_calls")}, default=str), flush=True)
    data["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    data["load_end"] = os.getloadavg()
    output = args.output or HERE / f"results-{dt.date.today().isoformat()}.json"
    output.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(report(data))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
