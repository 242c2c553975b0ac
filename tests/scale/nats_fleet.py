"""Simulated devices on a NATS cluster that behave as agents' links do, and what a test checks about them.

Shared by ``test_broker_node_kill.py`` and ``test_cluster_rollout_kill.py``:

- :class:`Devices`: fleets of simulated devices (``benchmarks/fleet/simulator.py``) on given nodes, each
  logged in as itself with a persistent session; :meth:`Devices.move` puts a dead node's devices on another
  node as the agent's link does (new connection resuming the session, refused SUBACKs retried, ``online``
  ``"1"`` and the last report on connect and when the same document arrives again live, the device's state
  kept); a session the broker drops later is connected again once a second, as paho's loop does for the
  agent. Without that, the moved sessions a NATS node closed some seconds after the other node's death (it
  closed a hub's connection at the same moment, "Unspecified error") stayed unconnected to the end, and the
  hub's recovery passes re-sent their documents in vain: 49 devices of the last wave, in 1 of 14 runs here
  (the failure message showed them unconnected) and, same signature, in a CI run. Persistent as the agent's
  sessions are (an earlier run with clean sessions, where 10 moved devices were sent nothing more, likely
  met the same drops);
- with a :class:`sim_telemetry.Telemetry`, every device also sends telemetry as the agent does (its queue,
  sender and the hub's ``telemetry-stored`` confirmations, ADR 0049); a moved device keeps its queue;
- :class:`DocumentLog`: every document each device is sent, to find a sequence with two contents;
- :func:`unfinished`: the devices not on their newest document with status 200, or whose report of it the
  hub did not store (a lost report, counted);
- :func:`retained`: what the broker retains on a channel, for a failure's message;
- :func:`fleet_users`: the logins of two hub replicas, the probe and every device; :func:`replica_logs`: the
  tail of each replica's log, for a failure's message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import queue
import socket
import threading
import time
from typing import Any

from mqtt_probe import Probe, Received
from sim_telemetry import Telemetry
from simulator import KEEPALIVE, Fleet

from edgeship.hub.broker.nats import NatsUser, hash_password_bcrypt
from edgeship.hub.store import HubStore
from edgeship.mqtt import device_topic
from edgeship.signing import TrustRoot

__all__ = ["STUCK", "WAIT", "Devices", "DocumentLog", "fleet_users", "replica_logs", "retained", "sequence_of",
           "unfinished"]

WAIT = 150.0  # seconds to connect and subscribe every session
STUCK = 15.0  # seconds without CONNACK/SUBACK before a simulated session is dropped and retried


def sequence_of(payload: bytes) -> tuple[int, list[int]]:
    """A document's sequence and the versions of the modules it names (from their signed manifests)."""
    document = json.loads(base64.b64decode(json.loads(payload)["payload"]))
    versions = [int(json.loads(base64.b64decode(entry["module"]["payload"]))["version"])
                for entry in document.get("modules", {}).values()]  # fmt: skip
    return int(document["sequence"]), versions


class DocumentLog:
    """Every ``desired`` document each device is sent: (device, sequence) -> digests of the contents seen."""

    def __init__(self, url: str, client_id: str = "hub-probe") -> None:
        self.contents: dict[tuple[str, int], set[str]] = {}
        self.lock = threading.Lock()
        self.probe = Probe(url, client_id)
        self.probe.handlers.append(self._on)
        self.probe.subscribe("edgeship/v1/devices/+/desired")

    def _on(self, _probe: Probe, message: Received) -> None:
        if message.payload:
            device = message.topic.split("/")[3]
            with self.lock:
                key = (device, sequence_of(message.payload)[0])
                self.contents.setdefault(key, set()).add(hashlib.sha256(message.payload).hexdigest())

    def latest(self, device: str) -> int:
        with self.lock:
            return max(seq for d, seq in self.contents if d == device)

    def twice(self) -> dict[tuple[str, int], set[str]]:
        """(device, sequence) pairs seen with two contents or more: what must never happen."""
        with self.lock:
            return {key: digests for key, digests in self.contents.items() if len(digests) > 1}

    def close(self) -> None:
        self.probe.client.disconnect()
        self.probe.client.loop_stop()


class Devices:
    """Simulated devices on given nodes, each logged in as itself; stepped from the test's thread.

    Each connect publishes ``online`` ``"1"`` and the device's last report again, as the agent's link does.
    """

    def __init__(self, urls: list[str], ids: list[str], root: TrustRoot, telemetry: Telemetry | None = None, *,
                 subscribe_qos: int = 1) -> None:
        """``subscribe_qos``: of each device's ``desired`` and ``commands``; 0 as agents on NATS (ADR 0050)."""
        self.root = root
        self.subscribe_qos = subscribe_qos
        self.telemetry = telemetry  # None: no telemetry
        self.reports: dict[str, bytes] = {}  # each device's last report, as its link keeps it
        self.desired: dict[str, bytes] = {}  # each device's last desired message
        self.fleets = [self._fleet(url, ids[i::len(urls)]) for i, url in enumerate(urls)]
        self.attempts: dict[str, float] = {}
        self.retries = 0
        self.heard: dict[str, int] = {}  # device -> desired messages received (for a failure's message)
        self.reconnects = 0  # sessions the broker dropped after they were up, connected again
        self._connecting = False  # connect() is bringing sessions up itself
        self._next_redial = 0.0

    def _fleet(self, url: str, ids: list[str], before: Fleet | None = None) -> Fleet:
        # persistent as an agent's link: the session resumes on any node
        fleet = Fleet(url, ids, self.root, persistent=True, telemetry=self.telemetry, subscribe_qos=self.subscribe_qos)
        kept = {device.device_id: device for device in before.devices} if before is not None else {}
        for device in fleet.devices:
            if device.device_id in kept:  # the same device on a new connection: what it applied stays
                old = kept[device.device_id]
                device.last_applied, device.last_code = old.last_applied, old.last_code
                device.accepted_raw, device.services = old.accepted_raw, old.services
            device.client.username_pw_set(device.device_id, "dev-pw")
            self._as_link(fleet, device)
        return fleet

    def _as_link(self, fleet: Fleet, device: Any) -> None:
        """As agent/link/mqtt.py: refused subscriptions retried; ``online`` and the last report again on connect, and
        when the same document arrives again live."""
        client, device_id = device.client, device.device_id
        inner_subscribe, inner_connect, inner_message = client.on_subscribe, client.on_connect, client.on_message
        publish = client.publish

        def on_subscribe(client: Any, data: Any, mid: int, codes: Any, props: Any) -> None:
            if any(getattr(code, "is_failure", False) for code in codes):  # retried as the agent's link does
                self.retries += 1
                client.subscribe(fleet.subscriptions(data))
                return
            inner_subscribe(client, data, mid, codes, props)

        def on_connect(client: Any, data: Any, flags: Any, reason: Any, props: Any) -> None:
            inner_connect(client, data, flags, reason, props)
            if not getattr(reason, "is_failure", False):
                client.publish(device_topic(device_id, "online"), b"1", qos=1, retain=True)
                if device_id in self.reports:
                    client.publish(device_topic(device_id, "reported"), self.reports[device_id], qos=1, retain=True)

        def recording(topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                      properties: Any = None) -> Any:
            if topic.endswith("/reported"):
                self.reports[device_id] = payload.encode() if isinstance(payload, str) else bytes(payload)
            return publish(topic, payload, qos, retain, properties)

        def on_message(client: Any, data: Any, message: Any) -> None:
            if message.topic == data.desired:  # the same document again, live: the last report again
                self.heard[device_id] = self.heard.get(device_id, 0) + 1
                payload = bytes(message.payload)
                same, self.desired[device_id] = payload == self.desired.get(device_id), payload
                if same and not message.retain and device_id in self.reports:
                    client.publish(device_topic(device_id, "reported"), self.reports[device_id], qos=1, retain=True)
            inner_message(client, data, message)

        client.on_subscribe, client.on_connect, client.on_message = on_subscribe, on_connect, on_message
        client.publish = recording

    def move(self, index: int, url: str) -> None:
        """Fleet ``index``'s devices connect to ``url`` (their node died)."""
        old = self.fleets[index]
        old.close()
        self.fleets[index] = self._fleet(url, [device.device_id for device in old.devices], old)
        self.connect([self.fleets[index]])

    def describe(self, device_ids: list[str]) -> str:
        """What a failure's message says of these devices' links."""
        by_id = {device.device_id: device for device in self.all()}
        links = [f"{d}: connected {by_id[d].client.is_connected()}, {self.heard.get(d, 0)} documents heard"
                 for d in device_ids]  # fmt: skip
        made = f"{self.retries} refused SUBACKs retried, {self.reconnects} dropped sessions connected again"
        return made + "; " + ", ".join(links)

    def all(self) -> list[Any]:
        return [device for fleet in self.fleets for device in fleet.devices]

    def step(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for fleet in self.fleets:
                fleet.step(0.005)
            self._redial()

    def _redial(self) -> None:
        """Once a second: connect again every session the broker dropped (paho's loop does that for the agent)."""
        now = time.monotonic()
        if self._connecting or now < self._next_redial:
            return
        self._next_redial = now + 1.0
        for fleet in self.fleets:
            for device in fleet.devices:
                if device.ready and device.client.socket() is None and device.client.host:
                    self.reconnects += 1
                    with contextlib.suppress(OSError):
                        device.client.reconnect()

    def connect(self, fleets: list[Fleet] | None = None) -> None:
        """Connect and subscribe every session; a refused or silent connect is retried."""
        deadline = time.monotonic() + WAIT
        self.attempts.clear()
        self._connecting = True
        try:
            self._connect(fleets or self.fleets, deadline)
        finally:
            self._connecting = False

    def _connect(self, fleets: list[Fleet], deadline: float) -> None:
        for fleet in fleets:
            for device in fleet.devices:
                device.ready = False
            with contextlib.suppress(TimeoutError):  # retried below
                fleet.connect(20.0)
        while not all(device.ready for fleet in fleets for device in fleet.devices):
            assert time.monotonic() < deadline, (
                f"{sum(not d.ready for f in fleets for d in f.devices)} simulated devices did not connect and "
                f"subscribe in {WAIT:.0f} s ({self.retries} refused SUBACKs retried)")
            now = time.monotonic()
            for fleet in fleets:
                for index, device in enumerate(fleet.devices):
                    sock = device.client.socket()
                    if device.ready:
                        continue
                    if sock is None:
                        self.attempts[device.device_id] = now
                        with contextlib.suppress(OSError):
                            if device.client.host:
                                device.client.reconnect()
                            else:  # the first pass ran out of time before it reached this session: never connected
                                device.client.connect(fleet.settings.host, fleet.settings.port, keepalive=KEEPALIVE,
                                                      bind_address=fleet.sources[index % len(fleet.sources)])
                    elif now - self.attempts.setdefault(device.device_id, now) > STUCK:
                        sock.shutdown(socket.SHUT_RDWR)
            self.step(1.0)

    def close(self) -> None:
        for fleet in self.fleets:
            fleet.close()


def retained(probe_url: str, channel: str) -> dict[str, bytes]:
    """What the broker retains on ``channel`` for every device, read by a fresh subscriber."""
    retained = Probe(probe_url, f"hub-probe-{channel}").subscribe(f"edgeship/v1/devices/+/{channel}")
    seen: dict[str, bytes] = {}
    end = time.monotonic() + 30
    while time.monotonic() < end:  # until 2 s pass without a retained message
        try:
            message = retained.messages.get(timeout=2.0)
        except queue.Empty:
            break
        seen[message.topic.split("/")[3]] = message.payload
    retained.client.disconnect()
    return seen


def unfinished(devices: Devices, store: HubStore) -> dict[str, str]:
    """Devices not (yet) on their newest document with status 200, or whose report of it the hub did not store."""
    ids = [d.device_id for d in devices.all()]
    newest, stored = store.latest_desired(ids), store.reported(ids)
    behind: dict[str, str] = {}
    for device in devices.all():
        issued = newest[device.device_id].sequence if device.device_id in newest else None
        if device.last_applied != issued or device.last_code != 200:
            behind[device.device_id] = f"applied {device.last_applied} ({device.last_code}), newest issued {issued}"
            continue
        report = stored.get(device.device_id)
        state = report.state if report is not None else {}
        if state.get("lastAppliedSequence") != device.last_applied or state.get("status", {}).get("code") != 200:
            behind[device.device_id] = (f"applied {device.last_applied}, the hub stored "
                                        f"{state.get('lastAppliedSequence')} ({state.get('status', {}).get('code')})")
    return behind


def fleet_users(device_ids: list[str]) -> list[NatsUser]:
    """NATS logins: ``hub-0``, ``hub-1`` and ``hub-probe`` with password ``hub-pw``, each device with ``dev-pw``."""
    hub_hash, device_hash = hash_password_bcrypt("hub-pw"), hash_password_bcrypt("dev-pw")
    return [NatsUser(name, hub_hash) for name in ("hub-0", "hub-1", "hub-probe")] + [
        NatsUser(device, device_hash) for device in device_ids]


def replica_logs(replicas: list[Any]) -> str:
    """The last 3,000 characters of each hub process's log (``HubProcess``), for a failure's message."""
    return "\n".join(f"--- {r.name}\n{r.log.read_text()[-3000:]}" for r in replicas if r.log.exists())
