"""A device login storm through the NATS auth callout beside the same storm checked by the nodes (ADR 0051).

ADR 0051 moves every device login's bcrypt check from the nodes (``users.conf``) to the hub replicas that
serve the auth callout, and asked for a storm measured both ways. Per run, in this order (reversed on even
runs, so neither configuration always goes first), a fresh 3-node cluster
(``tests/scale/nats_cluster.NatsCluster``, the product's config) per configuration:

- **users.conf**: ``NatsSettings()``, every device a line of ``users.conf``: the nodes check bcrypt themselves;
- **callout**: ``NatsSettings(auth_callout=<issuer>)`` and two callout processes (``auth_callout.py callout``,
  as two hub replicas would be): each a :class:`~edgeship.hub.broker.nats_callout.NatsAuthCallout` with a
  :class:`~edgeship.hub.broker.nats_callout.LoginDecider` over the same bcrypt hashes, logged in as ``hub-0``
  and ``hub-1`` on the nodes' NATS client ports, in one queue group; their own processes, so their CPU is
  measured apart from the nodes'. ``users.conf`` still lists the devices (the fallback the product writes).

Every device has its own password and bcrypt hash (cost 6, ``BCRYPT_COST``), hashed once for both. After a
warm-up login (a hub user over MQTT on each node, so the nodes' MQTT streams exist before anything is timed):

1. **first storm**: N devices (clean MQTT 3.1.1 sessions, each with its own client id,
   :func:`~edgeship.mqtt.client.mqtt_client_id`) spread over the three nodes connect at once; timed from the
   first connect until every CONNACK accepted. The sessions are ``benchmarks/fleet/simulator.py``'s (paho
   clients on one epoll loop, several source addresses), with its sliding window of sessions between connect
   and CONNACK per node (``--window``, the simulator's 250; 0: no window). A refused login (a CONNACK that
   refuses, or the node closing the connection first) is counted and retried after the agent link's backoff
   (paho's: 1 s, doubling per failure to 30 s); what is measured is the login, so nothing is subscribed;
2. every session disconnects, a pause (``--settle``), then the **second storm** (a reconnect): the callout now
   remembers each password bcrypt accepted (a SHA-256 lookup), the nodes check bcrypt again;
3. **reload**: with every device connected, SIGHUP to every node (what the hub sends after a credential change);
   with the callout each node asks again about every live connection: the decisions, the seconds until they stop,
   the CPU, and the sessions still connected after it;
4. **impostor check**: device 0 logs in with device 1's client id on device 1's node while device 1 is
   connected; refused, and device 1 still connected 2 s later? Run in both configurations: with ``users.conf``
   the impostor is expected to win (ADR 0051's finding), with the callout to be refused.

Per storm: seconds, logins accepted and refused, connect-to-CONNACK latency, CPU seconds (user + system,
``/proc/<pid>/stat``) of the three nodes together, of the two callout processes together, and of this driver
(the simulated devices); the logins the callouts decided (a decision the node no longer waited for counts
too), and the nodes' warnings and errors by kind. ``/proc/loadavg`` before and after each configuration:
the machine is shared.

    python benchmarks/broker/auth_callout.py --devices 2000 --runs 2 \\
        --out benchmarks/broker/results-2026-12-06-auth-callout.json

Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import resource
import secrets
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (REPO / "tests", REPO / "tests" / "scale", REPO / "benchmarks" / "fleet"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import paho.mqtt.client as paho  # noqa: E402
from nats_cluster import NatsCluster, nats_binary  # noqa: E402
from simulator import CONNECT_WINDOW, KEEPALIVE, Fleet, SimDevice, device_ids  # noqa: E402

from edgeship.fsutil import atomic_write_text  # noqa: E402
from edgeship.hub.broker.nats import BCRYPT_COST, NatsSettings, NatsUser, hash_password_bcrypt  # noqa: E402
from edgeship.hub.broker.nats_callout import LoginDecider, NatsAuthCallout  # noqa: E402
from edgeship.hub.broker.nats_jwt import NKey  # noqa: E402
from edgeship.mqtt import parse_broker_url  # noqa: E402
from edgeship.mqtt.client import RECONNECT_MAX, RECONNECT_MIN, make_client, mqtt_client_id  # noqa: E402

PREFIX = "dev."  # device ids with '.': their client ids carry '~' (mqtt_client_id), which the callout checks
HUBS = ("hub-0", "hub-1")  # the two callout processes, as two hub replicas
PROBE = "hub-probe"  # the warm-up login (a hub user: the nodes check it, never the callout)
HUB_PASSWORD_ENV = "EDGESHIP_BENCH_HUB_PASSWORD"  # how a callout process gets its password (not on its argv)
CONFIGS = ("users.conf", "callout")
STUCK = 15.0  # seconds without CONNACK before a session is dropped and retried
CONNECTING, ACCEPTED, REFUSED, CLOSED = "connecting", "accepted", "refused", "closed"


# CPU and load -----------------------------------------------------------------------------------------
def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes (all their threads), from ``/proc/<pid>/stat``."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


class NodeLogs:
    """The nodes' warnings and errors since the last call, counted by kind (ids, addresses and times blanked)."""

    _VARYING = [(re.compile(r"^\[\d+\] \S+ \S+ "), ""), (re.compile(r"\d+\.\d+\.\d+\.\d+:\d+"), "ADDR"),
                (re.compile(r"\b(cid|rid|mid):\d+"), r"\1:N"), (re.compile(r'"[^"]*\d{3,}[^"]*"'), '"ID"'),
                (re.compile(r"\d+(\.\d+)?(µs|ms|s)\b"), "T")]  # fmt: skip

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.offsets = {path: 0 for path in self.paths}

    def since_last(self) -> dict[str, int]:
        kinds: Counter[str] = Counter()
        for path in self.paths:
            with contextlib.suppress(OSError), path.open("rb") as handle:
                handle.seek(self.offsets[path])
                text = handle.read()
                self.offsets[path] += len(text)
            for line in text.decode(errors="replace").splitlines():
                if "[ERR]" in line or "[WRN]" in line:
                    for pattern, replacement in self._VARYING:
                        line = pattern.sub(replacement, line)
                    kinds[line.strip()] += 1
        return dict(kinds.most_common(8))


# The devices --------------------------------------------------------------------------------------------
class LoginFleet(Fleet):
    """The simulator's sessions toward one node, each logging in as its device with its own password; a session
    is done at its CONNACK (no subscriptions: the login is what is measured)."""

    def __init__(self, url: str, ids: Sequence[str], passwords: Mapping[str, str]) -> None:
        super().__init__(url, ids, None, verify=False)  # type: ignore[arg-type]  (no documents, no trust root)
        self.index = {device.device_id: i for i, device in enumerate(self.devices)}
        for device in self.devices:
            device.client.username_pw_set(device.device_id, passwords[device.device_id])
            device.client.on_disconnect = self._on_disconnect
        self.reset()

    def reset(self) -> None:
        """A new storm: every device waits to connect."""
        self.outcome: dict[str, str] = {}
        self.sent: dict[str, float] = {}
        self.queue = list(range(len(self.devices)))[::-1]  # popped from the end: devices in order
        self.retry: list[tuple[float, int]] = []
        self.delay: dict[str, float] = {}  # device id -> its next retry's wait, doubling as the agent's link does
        self.latency: list[float] = []
        self.connecting = self.accepted = self.connect_errors = self.stuck = self.dropped = 0
        self.refused: Counter[str] = Counter()  # 'connack <code>' or 'closed before CONNACK'

    def open_some(self, window: int, now: float) -> None:
        """Connect queued devices (and refused ones whose retry is due) while fewer than ``window`` wait."""
        due = [index for when, index in self.retry if when <= now]
        if due:
            self.retry = [(when, index) for when, index in self.retry if when > now]
            self.queue.extend(due)
        while self.queue and (window <= 0 or self.connecting < window):
            index = self.queue.pop()
            device = self.devices[index]
            self.outcome[device.device_id], self.sent[device.device_id] = CONNECTING, time.monotonic()
            self.connecting += 1
            try:
                device.client.connect(self.settings.host, self.settings.port, keepalive=KEEPALIVE,
                                      bind_address=self.sources[index % len(self.sources)])
            except OSError:
                self.connect_errors += 1
                self._settle(device, REFUSED)

    def drop_stuck(self, now: float) -> None:
        """Shut the socket of a session that has waited over :data:`STUCK` for its CONNACK; it is retried."""
        for device_id, state in self.outcome.items():
            if state == CONNECTING and now - self.sent[device_id] > STUCK:
                sock = self.devices[self.index[device_id]].client.socket()
                if sock is not None:
                    self.stuck += 1
                    self.sent[device_id] = now
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def close_all(self, timeout: float = 30.0) -> None:
        """A clean DISCONNECT from every session, until every socket is closed; not counted as drops."""
        for device in self.devices:
            self.outcome[device.device_id] = CLOSED
        self.disconnect(timeout)

    def _settle(self, device: SimDevice, state: str) -> None:
        """The attempt is over; a refused one is tried again after the agent's backoff (1 s, doubling to 30 s)."""
        self.connecting -= 1
        self.outcome[device.device_id] = state
        if state == REFUSED:
            delay = self.delay.get(device.device_id, float(RECONNECT_MIN))
            self.delay[device.device_id] = min(delay * 2, float(RECONNECT_MAX))
            self.retry.append((time.monotonic() + delay, self.index[device.device_id]))

    def _on_connect(self, client: paho.Client, device: SimDevice, _flags: Any, reason: Any, _props: Any) -> None:
        if self.outcome.get(device.device_id) != CONNECTING:
            return
        if getattr(reason, "is_failure", False):
            self.refused[f"connack {int(reason.value)}"] += 1
            self._settle(device, REFUSED)
            return
        self.accepted += 1
        self.latency.append(time.monotonic() - self.sent[device.device_id])
        device.ready = True
        self._settle(device, ACCEPTED)

    def _on_disconnect(self, _client: paho.Client, device: SimDevice, _flags: Any, _reason: Any,
                       _props: Any) -> None:  # fmt: skip
        state = self.outcome.get(device.device_id)
        if state == CONNECTING:  # closed before any CONNACK: the node refused the login (or it timed out)
            self.refused["closed before CONNACK"] += 1
            self._settle(device, REFUSED)
        elif state == ACCEPTED:  # an accepted session the node closed (an impostor replacing it, say)
            self.dropped += 1
            device.ready = False
            self.outcome[device.device_id] = CLOSED


def step_all(fleets: Sequence[LoginFleet], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fleet in fleets:
            fleet.step(0.002)


def storm(fleets: Sequence[LoginFleet], window: int, timeout: float) -> dict[str, Any]:
    """Every device of ``fleets`` connects at once; until every login is accepted (or ``timeout``)."""
    total = sum(len(fleet.devices) for fleet in fleets)
    for fleet in fleets:
        fleet.reset()
    started = time.monotonic()
    deadline, next_sweep = started + timeout, started + 1.0
    while sum(fleet.accepted for fleet in fleets) < total and time.monotonic() < deadline:
        now = time.monotonic()
        for fleet in fleets:
            fleet.open_some(window, now)
        if now > next_sweep:
            next_sweep = now + 1.0
            for fleet in fleets:
                fleet.drop_stuck(now)
        for fleet in fleets:
            fleet.step(0.002)
    seconds = time.monotonic() - started
    latency = sorted(value for fleet in fleets for value in fleet.latency)
    accepted = sum(fleet.accepted for fleet in fleets)

    def ms(q: float) -> float | None:
        return round(1000 * latency[min(len(latency) - 1, int(q * len(latency)))], 1) if latency else None

    refused: Counter[str] = sum((fleet.refused for fleet in fleets), Counter())
    return {"seconds": round(seconds, 3), "complete": accepted == total, "devices": total, "accepted": accepted,
            "refused": sum(refused.values()), "refused_by_kind": dict(refused),
            "devices_refused_at_least_once": sum(len(fleet.delay) for fleet in fleets),
            "connect_errors": sum(fleet.connect_errors for fleet in fleets),
            "stuck": sum(fleet.stuck for fleet in fleets), "dropped": sum(fleet.dropped for fleet in fleets),
            "logins_per_second": round(accepted / seconds, 1) if seconds else None,
            "connack_ms": {"p50": ms(0.5), "p95": ms(0.95), "max": round(1000 * latency[-1], 1) if latency else None,
                           "mean": round(1000 * statistics.fmean(latency), 1) if latency else None}}  # fmt: skip


# A single login beside the fleets -----------------------------------------------------------------------
class Login:
    """One paho client on its own thread, before the fleets open their sockets (paho's loop uses select(), which
    fails past file descriptor 1023): connects, records CONNACK codes and disconnects."""

    def __init__(self, url: str, username: str, password: str) -> None:
        settings = parse_broker_url(url, username=username, password=password)
        self.client = make_client(settings, username, persistent=False)
        self.connack: list[int] = []
        self.disconnects = 0
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(int(rc.value))
        self.client.on_disconnect = lambda *_a: self._disconnected()
        self.client.reconnect_delay_set(3600, 3600)  # one attempt: paho's loop would otherwise try again
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def _disconnected(self) -> None:
        self.disconnects += 1

    @property
    def answered(self) -> bool:
        return bool(self.connack) or self.disconnects > 0

    @property
    def accepted(self) -> bool:
        return self.connack[:1] == [0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def warm_up(urls: Sequence[str], password: str) -> None:
    """A hub user's MQTT login on every node: the nodes make their MQTT streams before anything is timed."""
    for url in urls:
        login = Login(url, PROBE, password)
        deadline = time.monotonic() + 60
        while not login.answered and time.monotonic() < deadline:
            time.sleep(0.05)
        login.close()
        if not login.accepted:
            raise RuntimeError(f"the warm-up login at {url} was not accepted ({login.connack})")


def impostor_check(fleets: Sequence[LoginFleet], urls: Sequence[str], ids: Sequence[str],
                   passwords: Mapping[str, str]) -> dict[str, Any]:  # fmt: skip
    """Device 0 logs in with device 1's client id on device 1's node, device 1 connected; device 1 still
    connected 2 s after the answer?"""
    impostor, victim = ids[0], ids[1]
    node = next(i for i, fleet in enumerate(fleets) if victim in fleet.index)
    fleet = fleets[node]
    device = fleet.devices[fleet.index[victim]]
    connected_before = fleet.outcome.get(victim) == ACCEPTED and device.client.socket() is not None
    # on the fleets' epoll loop: paho's own loop uses select(), which fails past file descriptor 1023
    intruder = LoginFleet(urls[node], [impostor], passwords)
    intruder.devices[0].client._client_id = mqtt_client_id(victim).encode()  # make_client sent its own id
    intruder.open_some(1, time.monotonic())
    deadline = time.monotonic() + 15
    while intruder.outcome[impostor] == CONNECTING and time.monotonic() < deadline:
        step_all([*fleets, intruder], 0.05)
    answer = intruder.outcome[impostor] if intruder.outcome[impostor] != CONNECTING else "no answer in 15 s"
    if answer == REFUSED:
        answer += f" ({', '.join(intruder.refused)})"
    step_all([*fleets, intruder], 2.0)  # without the binding the two replace each other within a second
    victim_stayed = connected_before and fleet.outcome.get(victim) == ACCEPTED and device.client.socket() is not None
    intruder.close_all()
    intruder.close()
    return {"impostor": impostor, "victim": victim, "node": node, "impostor_answer": answer,
            "impostor_refused": answer.startswith(REFUSED), "victim_connected_before": connected_before,
            "victim_stayed": victim_stayed}  # fmt: skip


def reload_check(cluster: NatsCluster, fleets: Sequence[LoginFleet], nodes: Sequence[int],
                 callouts: Sequence[CalloutProcess], quiet: float = 3.0, timeout: float = 120.0) -> dict[str, Any]:
    """What the hub's reload after a credential change costs with every device connected: SIGHUP to every node (as
    ``ManagedNats`` sends it), then until the callouts have decided nothing new for ``quiet`` seconds (with the
    callout, each node asks again about every live connection). Sessions lost by it are counted."""
    connected = sum(1 for fleet in fleets for state in fleet.outcome.values() if state == ACCEPTED)
    nodes_cpu, callout_cpu = cpu_seconds(nodes), cpu_seconds([c.pid for c in callouts])
    before = decisions(callouts)
    started = last_change = time.monotonic()
    seen = sum(before.values())
    cluster.reload()
    while time.monotonic() - last_change < quiet and time.monotonic() - started < timeout:
        step_all(fleets, 0.5)
        now = sum(decisions(callouts).values())
        if now != seen:
            seen, last_change = now, time.monotonic()
    after = decisions(callouts)
    still = sum(1 for fleet in fleets for state in fleet.outcome.values() if state == ACCEPTED)
    return {"connected": connected, "still_connected": still,
            "seconds_until_quiet": round(last_change - started, 2) if callouts else None,
            "decisions": {k: v - before[k] for k, v in after.items()},
            "nodes_cpu": round(cpu_seconds(nodes) - nodes_cpu, 2),
            "callouts_cpu": round(cpu_seconds([c.pid for c in callouts]) - callout_cpu, 2) if callouts else None}


# The callout processes -----------------------------------------------------------------------------------
class CalloutProcess:
    """``auth_callout.py callout`` in a subprocess: a hub replica's auth callout, JSON lines on stdin/stdout."""

    def __init__(self, username: str, password: str, servers: Sequence[str], logins: Path, issuer: Path,
                 log: Path) -> None:  # fmt: skip
        self.username = username
        self.log = log
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "callout", "--username", username,
                 "--servers", ",".join(servers), "--logins", str(logins), "--issuer", str(issuer)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sink, text=True, bufsize=1,
                env={**os.environ, HUB_PASSWORD_ENV: password},
            )  # fmt: skip
        self.read(30.0)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            raise RuntimeError(f"callout {self.username} said nothing in {timeout} s (exit {self.process.poll()}): "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
        return json.loads(line)

    def ask(self, command: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read(timeout)

    def stop(self) -> dict[str, Any] | None:
        """Its final counts; the process is ended either way."""
        answer = None
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                answer = self.ask("stop")
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return answer


def decisions(callouts: Sequence[CalloutProcess]) -> dict[str, int]:
    """Logins the callout processes allowed and refused so far, together."""
    answers = [callout.ask("stats") for callout in callouts]
    return {"allowed": sum(a["allowed"] for a in answers), "refused": sum(a["refused"] for a in answers)}


def callout_main(argv: Sequence[str]) -> int:
    """The subprocess: serve the auth callout until ``stop`` (or stdin closes); ``stats`` answers the counts."""
    parser = argparse.ArgumentParser(prog="auth_callout.py callout")
    parser.add_argument("--username", required=True)
    parser.add_argument("--servers", required=True, help="the nodes' nats:// client URLs, comma separated")
    parser.add_argument("--logins", type=Path, required=True, help="JSON: username -> bcrypt hash")
    parser.add_argument("--issuer", type=Path, required=True, help="the issuer's seed file")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logins: dict[str, str] = json.loads(args.logins.read_text())
    decider = LoginDecider(NKey(args.issuer.read_text()), lambda: logins)
    callout = NatsAuthCallout(args.servers.split(","), decider, username=args.username,
                              password=os.environ[HUB_PASSWORD_ENV], name=f"edgeship-hub auth {args.username}")
    callout.start()

    def answer(**data: Any) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    answer(event="ready", pid=os.getpid())
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                answer(event="stats", allowed=decider.allowed, refused=decider.refused)
            elif line.strip() == "stop":
                break
    finally:
        callout.stop()
    answer(event="stopped", allowed=decider.allowed, refused=decider.refused)
    return 0


# One configuration ----------------------------------------------------------------------------------------
def measure(config: str, work: Path, ids: list[str], passwords: Mapping[str, str], hashes: Mapping[str, str],
            hub_password: str, hub_hash: str, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """A fresh cluster in ``config``; a warm-up, two storms and the impostor check."""
    result: dict[str, Any] = {"config": config, "loadavg_start": loadavg()}
    print(f"{config}: load {result['loadavg_start']}", flush=True)
    issuer = NKey.generate() if config == "callout" else None
    settings = NatsSettings(auth_callout=issuer.public_key) if issuer is not None else NatsSettings()
    users = [NatsUser(name, hub_hash) for name in (*HUBS, PROBE)] + [NatsUser(d, hashes[d]) for d in ids]
    with NatsCluster(work / "nats", users, settings=settings) as cluster, contextlib.ExitStack() as stack:
        nodes = [cluster.pid(i) for i in range(len(cluster.nodes))]
        callouts: list[CalloutProcess] = []
        if issuer is not None:
            atomic_write_text(work / "logins.json", json.dumps({d: hashes[d] for d in ids}), mode=0o600)
            atomic_write_text(work / "issuer.nk", issuer.seed + "\n", mode=0o600)
            servers = [f"nats://{node.host}:{node.client_port}" for node in cluster.nodes]
            for name in HUBS:
                callout = CalloutProcess(name, hub_password, servers, work / "logins.json", work / "issuer.nk",
                                         work / f"{name}.log")  # fmt: skip
                stack.callback(lambda callout=callout: result.setdefault("callouts", []).append(
                    {"name": callout.username, **(callout.stop() or {})}))
                callouts.append(callout)
        logs = NodeLogs([cluster.workdir / f"{node.name}.log" for node in cluster.nodes])
        warm_up(cluster.urls, hub_password)
        result["node_log_before_storms"] = logs.since_last()
        fleets = [LoginFleet(url, ids[i :: len(cluster.urls)], passwords) for i, url in enumerate(cluster.urls)]
        stack.callback(lambda: [fleet.close() for fleet in fleets])
        for label in ("first_storm", "second_storm"):
            if label == "second_storm":
                for fleet in fleets:
                    fleet.close_all()
                step_all(fleets, args.settle)
            nodes_cpu, callout_cpu = cpu_seconds(nodes), cpu_seconds([c.pid for c in callouts])
            decided = decisions(callouts)
            driver_cpu = time.process_time()
            outcome = storm(fleets, args.window, args.timeout)
            outcome["nodes_cpu"] = round(cpu_seconds(nodes) - nodes_cpu, 2)
            outcome["callouts_cpu"] = round(cpu_seconds([c.pid for c in callouts]) - callout_cpu, 2) if callouts \
                else None  # fmt: skip
            outcome["driver_cpu"] = round(time.process_time() - driver_cpu, 2)
            if callouts:  # every request the callouts answered, in time for the node or not
                outcome["callout_decisions"] = {k: v - decided[k] for k, v in decisions(callouts).items()}
            outcome["node_log"] = logs.since_last()
            result[label] = outcome
            print(f"{config}: {label} {json.dumps(outcome)}", flush=True)
        result["reload"] = reload_check(cluster, fleets, nodes, callouts)
        result["reload"]["node_log"] = logs.since_last()
        print(f"{config}: reload {json.dumps(result['reload'])}", flush=True)
        result["impostor"] = impostor_check(fleets, cluster.urls, ids, passwords)
        result["impostor"]["node_log"] = logs.since_last()
        print(f"{config}: impostor {json.dumps(result['impostor'])}", flush=True)
        for fleet in fleets:
            fleet.close_all()
    result["loadavg_end"] = loadavg()
    return result


# Reporting --------------------------------------------------------------------------------------------------
def table(data: dict[str, Any]) -> str:
    """The results as a Markdown table: a row per configuration and storm, the impostor check on the first."""
    rows = ["| run | configuration | storm | seconds to all accepted | logins refused (devices) | CONNACK p50 / p95 ms "
            "| nodes CPU s | callouts CPU s (logins decided) | driver CPU s | impostor refused, victim stayed "
            "| load start → end |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]  # fmt: skip
    for run in data["runs"]:
        for result in run["configs"]:
            if "error" in result:
                rows.append(f"| {run['run']} | {result['config']} | — | error: {result['error']} | | | | | | | |")
                continue
            impostor = result.get("impostor", {})
            for label in ("first_storm", "second_storm"):
                s = result.get(label)
                if s is None:
                    continue
                first = label == "first_storm"
                seconds = f"{s['seconds']:.2f}" if s["complete"] else \
                    f"{s['accepted']:,} of {s['devices']:,} in {s['seconds']:.0f} s"  # fmt: skip
                callouts = "—"
                if s["callouts_cpu"] is not None:
                    decided = s.get("callout_decisions", {})
                    callouts = f"{s['callouts_cpu']:.2f} ({decided.get('allowed', 0) + decided.get('refused', 0):,})"
                check = f"{impostor.get('impostor_refused')}, {impostor.get('victim_stayed')}" if first else ""
                load = f"{result['loadavg_start'].split()[0]} → {result['loadavg_end'].split()[0]}" if first else ""
                rows.append(f"| {run['run']} | {result['config']} | {label.split('_')[0]} | {seconds} "
                            f"| {s['refused']:,} ({s.get('devices_refused_at_least_once', '?'):,}) "
                            f"| {s['connack_ms']['p50']:.0f} / {s['connack_ms']['p95']:.0f} | {s['nodes_cpu']:.2f} "
                            f"| {callouts} | {s['driver_cpu']:.2f} | {check} | {load} |")  # fmt: skip
    return "\n".join(rows)


# Entry points -----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["callout"]:
        return callout_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="results JSON (default: results-<date>-auth-callout.json here)")
    parser.add_argument("--window", type=int, default=CONNECT_WINDOW,
                        help="sessions between connect and CONNACK at once, per node (0: no limit)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between disconnecting and the 2nd storm")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a storm may take before it stops")
    parser.add_argument("--report", type=Path, help="print the table of a results JSON and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(table(json.loads(args.report.read_text())))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the nodes and callouts on the way out
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the nodes
    out = args.out or HERE / f"results-{dt.date.today().isoformat()}-auth-callout.json"
    data: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/broker/auth_callout.py", *argv]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "nats_server": subprocess.run([nats_binary(), "--version"], capture_output=True, text=True).stdout.strip(),
        "loadavg_before": loadavg(), "devices": args.devices, "bcrypt_cost": BCRYPT_COST, "window": args.window,
        "runs": [],
    }  # fmt: skip
    ids = device_ids(PREFIX, 0, args.devices)
    passwords = {device: secrets.token_urlsafe(18) for device in ids}
    started = time.monotonic()
    hashes = {device: hash_password_bcrypt(passwords[device]) for device in ids}
    hub_password = secrets.token_urlsafe(18)
    hub_hash = hash_password_bcrypt(hub_password)
    data["hash_seconds"] = round(time.monotonic() - started, 2)
    print(f"hashed {len(ids)} passwords (cost {BCRYPT_COST}) in {data['hash_seconds']} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgeship-auth-callout-bench-") as scratch:
        for run in range(1, args.runs + 1):
            record: dict[str, Any] = {"run": run, "configs": []}
            data["runs"].append(record)
            for config in CONFIGS if run % 2 else CONFIGS[::-1]:
                work = Path(scratch) / f"run{run}-{config}"
                work.mkdir()
                try:
                    record["configs"].append(measure(config, work, ids, passwords, hashes, hub_password, hub_hash,
                                                     args))  # fmt: skip
                except Exception as exc:  # a failed configuration is a result too
                    record["configs"].append({"config": config, "error": f"{type(exc).__name__}: {exc}",
                                              "loadavg_start": loadavg(), "loadavg_end": loadavg()})
                    print(f"{config}: {record['configs'][-1]['error']}", flush=True)
                out.write_text(json.dumps(data, indent=2) + "\n")  # what is done so far
    data["loadavg_after"] = loadavg()
    data["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(table(data))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
