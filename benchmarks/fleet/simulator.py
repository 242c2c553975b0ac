"""A light device simulator: many MQTT 3.1.1 sessions in one process, driven by one epoll loop.

Each simulated device is a paho client (``edgeship.mqtt.make_client``, clean
session) subscribed to its own ``desired`` topic and to ``commands/+/+``. On a
document it does what an agent's link and acceptance do: the full
:func:`edgeship.agent.decide.accept_document` check (hub signature against the
trust root, device id, replay, expiry, each module's release signature), then it
publishes the reported state (``build_report``'s shape, ``status.code`` 200 and
``lastAppliedSequence`` on success; the refusal's code otherwise) retained, QoS 1,
on ``reported``. It runs no modules: the "apply" is instant, so the benchmark
measures the hub, the broker and the verification, not Docker.

A command ``edgeship/v1/devices/{id}/commands/ping/{rid}`` is answered on
``responses/{rid}`` with no other work: the bare round trip the benchmark
compares against.

Optionally (``--bad-release MODULE:VERSION``, :class:`BadRelease`; used by
``benchmarks/rollout``) a deterministic share of the devices cannot run one
release: a document naming it is answered with 500 (accepted, the module's
``init()`` failed, the previous version keeps running: ``lastAppliedSequence``
moves on) or with 400 (refused: the sequence does not move, as an agent's
refusal). Every device then also notes when a document naming the release first
reached it, when it reported on it, and when a later document without it
arrived (the ``release`` command returns that log).

Optionally (``Fleet(..., telemetry=Telemetry(folder))``, ``sim_telemetry.py``;
used by ``tests/scale/test_cluster_rollout_kill.py``) every device also sends
telemetry as the agent does: the agent's on-disk queue, its sender and the hub's
``telemetry-stored`` confirmations (ADR 0049), the device subscribed to its own
``telemetry-stored`` topic, the senders pumped from the loop.

Why not a thread per client: paho's ``loop_start()`` starts a thread and a
``select()`` per client and dies past about 340 clients per process
(``../shared/DESIGN.md``). Here paho's ``on_socket_*`` callbacks register each
socket with one ``epoll``; ``loop_read``/``loop_write``/``loop_misc`` run when it
says so. One socket per session (paho creates its wake-up socket pair only for
``loop()``/``loop_start()``). Sessions are spread over several 127.0.0.x source
addresses, so 10,000 sessions (and their TIME_WAIT ports after a run) do not
exhaust the ephemeral ports toward one broker address.

Run standalone (the benchmark starts it as a subprocess that speaks JSON lines on
stdin/stdout, so device CPU can use the second core)::

    python benchmarks/fleet/simulator.py --broker mqtt://127.0.0.1:1883 --trust-root root.json \\
        --prefix dev- --first 0 --count 5000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import select
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho

from edgeship.agent.decide.accept import ReplayError, accept_document, status_code_for
from edgeship.agent.decide.plan import CurrentState, RunningService, service_name
from edgeship.agent.decide.report import build_report
from edgeship.errors import EdgeshipError
from edgeship.mqtt import device_topic, parse_broker_url, parse_device_topic
from edgeship.mqtt.client import make_client
from edgeship.signing import TrustRoot

if TYPE_CHECKING:
    from sim_telemetry import Telemetry

__all__ = ["SOURCES", "BadRelease", "Fleet", "SimDevice", "device_ids"]

SOURCES = tuple(f"127.0.0.{i}" for i in range(1, 9))  # source addresses: about 28k ports each toward one broker
CONNECT_WINDOW = 250  # sessions between connect and SUBACK at once (the broker's listen backlog)
KEEPALIVE = 600  # seconds; the simulator calls loop_misc only every MISC_EVERY seconds
MISC_EVERY = 5.0  # seconds between loop_misc sweeps (keep-alive pings, paho's retries)
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT


def _all_ready(devices: Sequence[SimDevice]) -> bool:
    return all(d.ready for d in devices)


def device_ids(prefix: str, first: int, count: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(first, first + count)]


@dataclass(frozen=True)
class BadRelease:
    """One module version that ``percent`` % of the devices cannot run; ``refuse_percent`` % of all refuse it.

    A device's lot is ``sha256(device id)`` (independent of any rollout order):
    below ``refuse_percent`` it refuses (400), below ``percent`` it fails (500).
    """

    module: str
    version: int
    percent: float = 0.0
    refuse_percent: float = 0.0

    @classmethod
    def parse(cls, text: str, percent: float, refuse_percent: float) -> BadRelease:
        module, _, version = text.partition(":")
        return cls(module, int(version), percent, refuse_percent)

    def code_for(self, device_id: str) -> int:
        """200, 400 or 500: what this device answers to a document naming the release."""
        lot = int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big") % 10_000 / 100
        if lot < self.refuse_percent:
            return 400
        return 500 if lot < self.percent else 200

    def named_in(self, envelope: bytes) -> tuple[int, bool]:
        """The document's sequence, and whether it names this release (read without verifying)."""
        document = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        entry = (document.get("modules") or {}).get(self.module)
        if entry is None:
            return int(document["sequence"]), False
        manifest = json.loads(base64.b64decode(entry["module"]["payload"]))
        return int(document["sequence"]), manifest.get("version") == self.version


class SimDevice:
    """One simulated agent: its session and what it last accepted."""

    __slots__ = ("accepted_raw", "client", "desired", "device_id", "last_applied", "last_code", "ready", "release",
                 "reported", "restarted", "services")

    def __init__(self, device_id: str, client: paho.Client) -> None:
        self.device_id = device_id
        self.client = client
        self.desired = device_topic(device_id, "desired")
        self.reported = device_topic(device_id, "reported")
        self.last_applied: int | None = None
        self.last_code: int | None = None
        self.ready = False  # CONNACK and SUBACK seen
        self.accepted_raw: bytes | None = None  # the retained copy of this arrives on every reconnect
        self.restarted = False  # an agent that restarted re-verifies its document once (agent.reconcile)
        self.services: tuple[dict[str, RunningService], dict[str, str]] = ({}, {})  # what runs (after an apply)
        self.release: dict[str, Any] | None = None  # with a BadRelease: when the release reached it, and left


class Fleet:
    """``device_ids`` as MQTT sessions to ``broker_url``; single-threaded: call its methods from one thread."""

    def __init__(
        self,
        broker_url: str,
        ids: Sequence[str],
        trust_root: TrustRoot,
        *,
        sources: Sequence[str] = SOURCES,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        verify: bool = True,
        bad_release: BadRelease | None = None,
        persistent: bool = False,
        telemetry: Telemetry | None = None,
        subscribe_qos: int = 1,
    ) -> None:
        """``persistent``: each session survives its connection (an agent's link does that; the benchmarks keep
        clean sessions, so a run leaves no state in the broker). ``telemetry``: every device also sends telemetry
        as the agent does (``sim_telemetry.py``); None (the benchmarks) sends none."""
        self.telemetry = telemetry
        self.subscribe_qos = subscribe_qos  # of desired and commands: 0 as agents on a NATS cluster (ADR 0050)
        self._next_pump = 0.0
        self.bad_release = bad_release  # None: every document applies (the fleet benchmark)
        self.verify = verify  # False only for the benchmark's diagnostic "hub and broker alone" runs
        self.settings = parse_broker_url(broker_url)
        self.trust_root = trust_root
        self.clock = clock
        self.sources = list(sources)
        self.epoll = select.epoll()
        self.devices: list[SimDevice] = []
        self._by_fd: dict[int, SimDevice] = {}
        self._want_write: set[SimDevice] = set()
        self._out_registered: set[int] = set()
        self._last_misc = time.monotonic()
        self._ready = 0  # devices with ready=True since the last connect()
        self._watched: dict[int, Callable[[], None]] = {}  # other file descriptors (the control pipe)
        self.counts: Counter[str] = Counter()  # applied, refused:<code>, pings, connects, subscribed
        self.verify_seconds = 0.0  # CPU-ish time inside accept_document and the report
        for device_id in ids:
            client = make_client(self.settings, device_id, persistent=persistent, max_inflight=20)
            device = SimDevice(device_id, client)
            client.user_data_set(device)
            client.on_socket_open = self._on_socket_open
            client.on_socket_close = self._on_socket_close
            client.on_socket_register_write = self._on_register_write
            client.on_socket_unregister_write = self._on_unregister_write
            client.on_connect = self._on_connect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            self.devices.append(device)
            if telemetry is not None:
                telemetry.attach(device_id)
        self._ids = [device.device_id for device in self.devices]

    # sessions -------------------------------------------------------------------------------
    def connect(self, timeout: float = 120.0) -> None:
        """Open every session and wait for all SUBACKs.

        At most :data:`CONNECT_WINDOW` sessions are between ``connect`` and SUBACK at
        once (a sliding window), so the broker's listen backlog never overflows and
        blocking connects never wait for a SYN retry.
        """
        deadline = time.monotonic() + timeout
        for device in self.devices:
            device.ready = False
        self._ready = 0
        for index, device in enumerate(self.devices):
            if index - self._ready >= CONNECT_WINDOW and not self.run_until(
                partial(self._window_open, index), deadline - time.monotonic()
            ):
                raise TimeoutError(f"{index - self._ready} sessions did not connect and subscribe in time")
            device.client.connect(self.settings.host, self.settings.port, keepalive=KEEPALIVE,
                                  bind_address=self.sources[index % len(self.sources)])
        if not self.run_until(partial(_all_ready, self.devices), deadline - time.monotonic()):
            missing = sum(1 for d in self.devices if not d.ready)
            raise TimeoutError(f"{missing} of {len(self.devices)} sessions did not connect and subscribe in time")

    def _window_open(self, connecting: int) -> bool:
        return connecting - self._ready < CONNECT_WINDOW

    def disconnect(self, timeout: float = 30.0) -> None:
        """A clean DISCONNECT from every session, then wait until the sockets are closed."""
        for device in self.devices:
            device.ready = False
            device.client.disconnect()
        self.run_until(lambda: not self._by_fd, timeout)

    def reconnect(self, timeout: float = 120.0, *, restart: bool = True) -> None:
        """Every device drops its session and reconnects; returns once each has its retained document again.

        ``restart``: the agents restarted too, so each re-verifies its document and
        reports. Otherwise an agent sees the bytes it already applies and does nothing.
        """
        self.disconnect()
        for device in self.devices:
            if restart:
                device.accepted_raw = None
                device.restarted = True
        expected = self.counts["desired_in"] + len(self.devices)
        deadline = time.monotonic() + timeout
        self.connect(timeout)
        if not self.run_until(lambda: self.counts["desired_in"] >= expected, deadline - time.monotonic()):
            raise TimeoutError(f"{expected - self.counts['desired_in']} devices got no retained document")

    def close(self) -> None:
        for fd in list(self._by_fd):
            device = self._by_fd.pop(fd)
            device.client.socket().close()  # type: ignore[union-attr]
        self.epoll.close()

    # the loop -------------------------------------------------------------------------------
    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.step(min(left, 0.05))
        return True

    def step(self, timeout: float) -> None:
        """One ``epoll.poll`` and dispatch; then flush what callbacks queued; then keep-alives when due."""
        for fd, mask in self.epoll.poll(timeout, 1024):
            device = self._by_fd.get(fd)
            if device is None:
                if fd in self._watched:
                    self._watched[fd]()
                continue
            if mask & (_IN | select.EPOLLERR | select.EPOLLHUP):
                device.client.loop_read()
            if mask & _OUT and fd in self._by_fd:
                device.client.loop_write()
        self._flush()
        now = time.monotonic()
        if self.telemetry is not None and now >= self._next_pump:
            self._next_pump = now + self.telemetry.pump_every
            self.telemetry.pump(self._ids)
            self._flush()
        if now - self._last_misc > MISC_EVERY:
            self._last_misc = now
            for device in self.devices:
                device.client.loop_misc()

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` from :meth:`step` when ``fd`` (not a session) has data."""
        self._watched[fd] = on_readable
        self.epoll.register(fd, _IN)

    def _flush(self) -> None:
        """Write what callbacks queued right away; only a socket that cannot take it all waits for EPOLLOUT."""
        while self._want_write:
            pending, self._want_write = self._want_write, set()
            for device in pending:
                device.client.loop_write()
                sock = device.client.socket()
                if device in self._want_write and sock is not None:
                    self._want_write.discard(device)
                    fd = sock.fileno()
                    if fd not in self._out_registered and fd in self._by_fd:
                        self._out_registered.add(fd)
                        self.epoll.modify(fd, _IN | _OUT)

    # paho socket callbacks --------------------------------------------------------------------
    def _on_socket_open(self, _client: paho.Client, device: SimDevice, sock: Any) -> None:
        fd = sock.fileno()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a report and a PUBACK leave back to back
        self._by_fd[fd] = device
        self.epoll.register(fd, _IN)
        self.counts["connects"] += 1

    def _on_socket_close(self, _client: paho.Client, device: SimDevice, sock: Any) -> None:
        fd = sock.fileno()
        if self._by_fd.pop(fd, None) is not None:
            self._out_registered.discard(fd)
            self._want_write.discard(device)
            with contextlib.suppress(OSError, ValueError):  # already closed by paho
                self.epoll.unregister(fd)

    def _on_register_write(self, _client: paho.Client, device: SimDevice, _sock: Any) -> None:
        self._want_write.add(device)

    def _on_unregister_write(self, _client: paho.Client, device: SimDevice, sock: Any) -> None:
        self._want_write.discard(device)
        fd = sock.fileno()
        if fd in self._out_registered:
            self._out_registered.discard(fd)
            if fd in self._by_fd:
                self.epoll.modify(fd, _IN)

    # MQTT callbacks ----------------------------------------------------------------------------
    def subscriptions(self, device: SimDevice) -> list[tuple[str, int]]:
        """What a device subscribes to: its ``desired`` and ``commands/+/+`` (``subscribe_qos``), and with telemetry
        ``telemetry-stored`` at QoS 0 as the agent's link (the hub sends it at QoS 0; on NATS a QoS 1 subscription
        would cost a replicated JetStream consumer per device)."""
        qos = self.subscribe_qos
        topics = [(device.desired, qos), (f"{device_topic(device.device_id, 'commands')}/+/+", qos)]
        if self.telemetry is not None:
            topics.append((device_topic(device.device_id, "telemetry-stored"), 0))
        return topics

    def _on_connect(self, client: paho.Client, device: SimDevice, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.counts["connect_refused"] += 1
            return
        client.subscribe(self.subscriptions(device))
        if self.telemetry is not None:
            self.telemetry.attach(device.device_id).connected(client)

    def _on_subscribe(self, _client: paho.Client, device: SimDevice, _mid: int, _codes: Any, _props: Any) -> None:
        if not device.ready:
            device.ready = True
            self._ready += 1
        self.counts["subscribed"] += 1

    def _on_message(self, client: paho.Client, device: SimDevice, message: paho.MQTTMessage) -> None:
        if message.topic == device.desired:
            self.counts["desired_in"] += 1
            if message.payload and self.bad_release is not None:
                self._note_release(device, bytes(message.payload))
            if message.payload:
                self._apply(client, device, bytes(message.payload))
            return
        if self.telemetry is not None and message.topic == self.telemetry.attach(device.device_id).stored_topic:
            self.telemetry.note(device.device_id, bytes(message.payload))
            return
        topic = parse_device_topic(message.topic)
        if topic is not None and topic.channel == "commands" and message.payload:
            client.publish(f"{device_topic(device.device_id, 'responses')}/{topic.rest[1]}", b'{"status":200}',
                           qos=1)
            self.counts["pings"] += 1

    def _note_release(self, device: SimDevice, envelope: bytes) -> None:
        """Device-side exposure log: the first document naming the bad release, and the first later one without."""
        assert self.bad_release is not None
        sequence, named = self.bad_release.named_in(envelope)
        log = device.release
        if named and log is None:
            device.release = {"sequence": sequence, "in": time.time()}
        elif log is not None and not named and sequence > log["sequence"] and "cleared_in" not in log:
            log["cleared_in"], log["cleared_sequence"] = time.time(), sequence

    def release_log(self) -> dict[str, dict[str, Any]]:
        """Every device a document naming the bad release reached: times (``time.time()``) and sequences."""
        return {d.device_id: d.release for d in self.devices if d.release is not None}

    def _apply(self, client: paho.Client, device: SimDevice, envelope: bytes) -> None:
        """What an agent does with a retained document, minus running the modules."""
        if envelope == device.accepted_raw:
            if device.last_code in (200, 500):
                self.counts["unchanged"] += 1  # what the agent already applies: nothing to verify or report
                return
            self._in_step(client, device)  # after a refused document: the agent's refusal no longer stands
            return
        started = time.perf_counter()
        if not self.verify:
            self._ack_unverified(client, device, envelope)
            self.verify_seconds += time.perf_counter() - started
            return
        now = self.clock()
        previous, restarted, device.restarted = device.last_applied, device.restarted, False
        try:
            accepted = accept_document(envelope, self.trust_root, device.device_id,
                                       None if restarted else previous, now)
            if previous is not None and accepted.sequence < previous:
                raise ReplayError(f"Deployment document {accepted.sequence} is older than the applied {previous}.")
        except EdgeshipError as exc:
            code = status_code_for(exc)
            device.last_code = code
            self.counts[f"refused:{code}"] += 1
            report = build_report(device_id=device.device_id, last_applied_sequence=device.last_applied,
                                  status=code, current=CurrentState(now=now), message=str(exc), now=now)
        else:
            code = 200
            if self.bad_release is not None and self.bad_release.named_in(envelope)[1]:
                code = self.bad_release.code_for(device.device_id)
            if code != 200:
                self._fail(client, device, envelope, accepted.sequence, code, now)
                self.verify_seconds += time.perf_counter() - started
                return
            services: dict[str, RunningService] = {}
            active: dict[str, str] = {}
            for name, manifest in accepted.manifests.items():
                entry = accepted.document.modules[name]
                service = service_name(name, "a")
                services[service] = RunningService(
                    service=service, module=name, version=manifest.version, module_digest="",
                    lock_digest=manifest.environment.lock_digest, state="running", port=entry.settings.port,
                )
                active[name] = service
            device.last_applied = accepted.sequence
            device.accepted_raw = envelope
            device.last_code = 200
            device.services = (services, active)
            self.counts["applied"] += 1
            report = build_report(device_id=device.device_id, last_applied_sequence=accepted.sequence, status=200,
                                  current=CurrentState(now=now, services=services, active=active), now=now)
        client.publish(device.reported, json.dumps(report, separators=(",", ":")), qos=1, retain=True)
        self.verify_seconds += time.perf_counter() - started


    def _in_step(self, client: paho.Client, device: SimDevice) -> None:
        """The document it applies came again after it refused another (an older one a broker node's loss left
        retained, ADR 0044): as ``agent.reconcile`` does, it reports 200 again."""
        now = self.clock()
        services, active = device.services
        device.last_code = 200
        self.counts["in_step_again"] += 1
        report = build_report(device_id=device.device_id, last_applied_sequence=device.last_applied, status=200,
                              current=CurrentState(now=now, services=services, active=active), now=now)
        client.publish(device.reported, json.dumps(report, separators=(",", ":")), qos=1, retain=True)

    def _fail(self, client: paho.Client, device: SimDevice, envelope: bytes, sequence: int, code: int,
              now: datetime) -> None:
        """The bad release on a device that cannot run it: 400 refuses the document, 500 accepts it, fails to start
        it and keeps the previous version running, as an agent reports either."""
        if code == 500:
            device.last_applied = sequence
            device.accepted_raw = envelope
            message = "init() failed: simulated (benchmarks/rollout)"
        else:
            message = "refused: simulated (benchmarks/rollout)"
        device.last_code = code
        self.counts[f"bad_release:{code}"] += 1
        services, active = device.services
        report = build_report(device_id=device.device_id, last_applied_sequence=device.last_applied, status=code,
                              current=CurrentState(now=now, services=services, active=active), message=message,
                              now=now)
        client.publish(device.reported, json.dumps(report, separators=(",", ":")), qos=1, retain=True)
        if device.release is not None and "reported" not in device.release:
            device.release["reported"], device.release["code"] = time.time(), code

    def _ack_unverified(self, client: paho.Client, device: SimDevice, envelope: bytes) -> None:
        """Diagnostic only: read the sequence without checking anything and report it applied."""
        sequence = json.loads(base64.b64decode(json.loads(envelope)["payload"]))["sequence"]
        device.last_applied, device.accepted_raw, device.last_code = sequence, envelope, 200
        self.counts["acked_unverified"] += 1
        report = {"schemaVersion": 1, "deviceId": device.device_id, "lastAppliedSequence": sequence,
                  "status": {"code": 200, "description": "unverified (benchmark diagnostic)", "message": None},
                  "modules": {}}
        client.publish(device.reported, json.dumps(report, separators=(",", ":")), qos=1, retain=True)


# The JSON-lines control protocol of the subprocess ----------------------------------------------
def _serve(fleet: Fleet) -> None:
    """Commands on stdin (``connect``, ``reconnect``, ``stats``, ``release``, ``stop``); one JSON answer line each."""
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    commands: list[str] = []
    buffer = [b""]
    closed = [False]

    def read_commands() -> None:
        chunk = os.read(stdin, 65536)
        if not chunk:
            closed[0] = True
            return
        *lines, buffer[0] = (buffer[0] + chunk).split(b"\n")
        commands.extend(json.loads(line)["cmd"] for line in lines if line.strip())

    def answer(**data: Any) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    fleet.watch(stdin, read_commands)
    answer(event="started", devices=len(fleet.devices))
    while not closed[0]:
        fleet.step(0.05)
        while commands:
            command = commands.pop(0)
            started = time.monotonic()
            if command == "connect":
                fleet.connect()
            elif command == "reconnect":
                fleet.reconnect()
            elif command == "reconnect-sessions":
                fleet.reconnect(restart=False)
            elif command == "stop":
                fleet.disconnect()
                answer(event="stopped")
                return
            extra = {"release": fleet.release_log()} if command == "release" else {}
            answer(event=command, seconds=round(time.monotonic() - started, 4), counts=dict(fleet.counts),
                   verify_seconds=round(fleet.verify_seconds, 4), cpu=round(time.process_time(), 4), **extra)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--trust-root", required=True, help="trust root JSON (TrustRoot.to_json)")
    parser.add_argument("--prefix", default="dev-")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--no-verify", action="store_true",
                        help="diagnostic: acknowledge documents without verifying them (not an agent's behaviour)")
    parser.add_argument("--bad-release", metavar="MODULE:VERSION",
                        help="a release some devices cannot run (benchmarks/rollout); the 'release' command logs it")
    parser.add_argument("--bad-percent", type=float, default=20.0, help="devices answering it 400 or 500")
    parser.add_argument("--refuse-percent", type=float, default=10.0, help="of those, devices answering 400")
    args = parser.parse_args(argv)
    with open(args.trust_root, "rb") as handle:
        trust_root = TrustRoot.from_json(handle.read())
    bad = BadRelease.parse(args.bad_release, args.bad_percent, args.refuse_percent) if args.bad_release else None
    fleet = Fleet(args.broker, device_ids(args.prefix, args.first, args.count), trust_root,
                  verify=not args.no_verify, bad_release=bad)
    try:
        _serve(fleet)
    finally:
        fleet.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
