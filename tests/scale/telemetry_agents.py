"""Agents' telemetry paths on a NATS cluster with a real ``hub serve --nats-inbound``: what reaches the hub's store.

Shared by ``test_telemetry_confirmation_nats.py`` and ``benchmarks/broker/telemetry_confirmation.py``
(ADR 0049, the hub's ``telemetry-stored`` acknowledgement):

- :class:`TelemetryDevice`: one device's telemetry path as the agent wires it (``agent/daemon.py``): a
  :class:`~edgeship.agent.link.mqtt.MqttLink` logged in as the device over a list of node addresses (it fails
  over along it; QoS 0 subscriptions, ``[broker] subscribe_qos = 0`` as on a NATS cluster, ADR 0050), an
  on-disk :class:`~edgeship.agent.telemetry.queue.TelemetryQueue`, and a
  :class:`~edgeship.agent.telemetry.sender.TelemetrySender`. With ``confirms`` the link feeds the hub's
  confirmations to :class:`~edgeship.agent.telemetry.confirm.StoredConfirmations`; without, the link does not
  subscribe to them, so the sender never sees one and counts the broker's PUBACK (what an agent did before);
- :class:`Pump`: one thread that pushes a sample into each device's queue every ``sample_every`` seconds while
  sampling is on and calls every connected sender's ``pump()`` every 0.2 s, as the agent's telemetry thread does;
- :func:`prepare_stream`: the inbound stream and consumer made before the hub starts, by the hub's own code, so
  the test knows the stream's leader node and can put the hub and the devices on the other two;
- :func:`telemetry_world`: all of it on a fresh cluster and database: the hub (its MQTT login and its
  ``--nats-inbound`` on one node that does not lead the stream), the devices alternating between the two such
  nodes with the leader last in their address lists, and the pump; ``victim`` is the leader's node;
- :func:`stream_leader`: which node leads the stream now (the benchmark checks it is still the one it kills);
- :func:`stored_samples`: every ``(device, seq)`` the hub's telemetry table holds (one entry per stored copy).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hub_process import HubProcess
from hub_workspace import make_hub_workspace
from nats_cluster import NatsCluster
from nats_fleet import fleet_users
from simulator import device_ids

from edgeship.agent.link.mqtt import Inbound, MqttLink
from edgeship.agent.telemetry.confirm import StoredConfirmations
from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.sender import TelemetrySender
from edgeship.hub.bridge.nats_inbound import NatsInbound
from edgeship.hub.broker.nats import INBOUND_STREAM
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt.settings import BrokerSettings

__all__ = ["PUMP_EVERY", "Pump", "TelemetryDevice", "TelemetryWorld", "missing_and_twice", "prepare_stream",
           "stored_samples", "stream_leader", "telemetry_world"]

PUMP_EVERY = 0.2  # seconds between two pump() calls, as agent/daemon.py's telemetry thread
HUB_PASSWORD, DEVICE_PASSWORD = "hub-pw", "dev-pw"  # nats_fleet.fleet_users' logins


class TelemetryDevice:
    """One device's link, queue, confirmations and sender; ``pushed`` lists the seqs its queue handed out."""

    def __init__(self, device_id: str, nodes: list[int], cluster: NatsCluster, folder: Path, *, confirms: bool,
                 resend_after: float) -> None:  # fmt: skip
        self.device_id = device_id
        addresses = [BrokerSettings("127.0.0.1", cluster.nodes[i].mqtt_port, username=device_id,
                                    password=DEVICE_PASSWORD) for i in nodes]  # fmt: skip
        self.confirmations = StoredConfirmations()
        self.queue = TelemetryQueue(folder)
        self.inbox: queue.Queue[Inbound] = queue.Queue()  # trust roots and documents: not looked at here
        self.link = MqttLink(addresses, device_id, self.inbox, on_stored=self.confirmations.note if confirms else None,
                             subscribe_qos=0)  # as agents on NATS are configured (ADR 0050)
        self.sender = TelemetrySender(device_id, self.queue, self.link, self.confirmations, resend_after=resend_after)
        self.pushed: list[int] = []

    def push(self) -> None:
        at = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        self.pushed.append(self.queue.push({"time": at, "cpuPercent": 1.0, "memoryBytes": 1024, "modules": {}}))


class Pump(threading.Thread):
    """Samples (while ``sampling`` is set) and pumps every device's sender; ``sample_every`` is per device."""

    def __init__(self, devices: list[TelemetryDevice], sample_every: float) -> None:
        super().__init__(name="telemetry-pump", daemon=True)
        self.devices, self.sample_every = devices, sample_every
        self.sampling = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._next_sample = 0.0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if self.sampling.is_set() and now >= self._next_sample:
                    self._next_sample = now + self.sample_every
                    for device in self.devices:
                        device.push()
                for device in self.devices:
                    if device.link.connected.is_set():
                        device.sender.pump()
                self.stopping.wait(max(0.0, PUMP_EVERY - (time.monotonic() - now)))
        except BaseException as exc:  # handed to the caller's thread, which fails with it
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(10)


def prepare_stream(cluster: NatsCluster, node: int) -> str:
    """Make the inbound stream and its consumer as the hub does (``NatsInbound``), as ``hub-0``; the leader's name.

    The hub finds them made and opens them. Made first so that the stream's leader is known before the hub and
    the devices pick their nodes: the leader's node is the one to kill.
    """
    import nats

    async def make() -> str:
        connection = await nats.connect(f"nats://127.0.0.1:{cluster.nodes[node].client_port}", user="hub-0",
                                        password=HUB_PASSWORD)  # fmt: skip
        try:
            opener = NatsInbound([], None, username="hub-0", password=HUB_PASSWORD)  # type: ignore[arg-type]
            await opener._open(connection)  # the hub's own stream and consumer settings
            info = await connection.jetstream(timeout=10.0).stream_info(INBOUND_STREAM)
            assert info.cluster is not None and info.cluster.leader, f"stream {INBOUND_STREAM} has no leader: {info}"
            return str(info.cluster.leader)
        finally:
            await connection.close()

    return asyncio.run(make())


def stream_leader(cluster: NatsCluster, node: int) -> str:
    """The name of the node leading the inbound stream now, asked as ``hub-0`` through ``node``."""
    import nats

    async def ask() -> str:
        connection = await nats.connect(f"nats://127.0.0.1:{cluster.nodes[node].client_port}", user="hub-0",
                                        password=HUB_PASSWORD)  # fmt: skip
        try:
            info = await connection.jetstream(timeout=10.0).stream_info(INBOUND_STREAM)
            return str(info.cluster.leader) if info.cluster is not None else ""
        finally:
            await connection.close()

    return asyncio.run(ask())


def stored_samples(db_url: str) -> list[tuple[str, int]]:
    """Every sample the hub's telemetry table holds, one ``(device, seq)`` per stored copy."""
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT device_id, batch FROM telemetry").fetchall()
    found: list[tuple[str, int]] = []
    for device, batch in rows:
        data = batch if isinstance(batch, dict) else json.loads(batch)
        found += [(device, int(sample["seq"])) for sample in data["samples"]]
    return found


def missing_and_twice(devices: list[TelemetryDevice], stored: list[tuple[str, int]]) -> tuple[list[Any], list[Any]]:
    """The pushed samples the store lacks, and those it holds more than once (each ``(device, seq)``)."""
    held = Counter(stored)
    pushed = [(device.device_id, seq) for device in devices for seq in device.pushed]
    return [key for key in pushed if key not in held], sorted(key for key, n in held.items() if n > 1)



@dataclass
class TelemetryWorld:
    cluster: NatsCluster
    victim: int  # the node leading the inbound stream
    hub_node: int  # the node the hub logs in to (MQTT and --nats-inbound)
    hub: HubProcess
    groups: dict[str, list[TelemetryDevice]]
    pump: Pump
    db_url: str

    @property
    def devices(self) -> list[TelemetryDevice]:
        return [device for group in self.groups.values() for device in group]

    def start(self) -> None:
        """The hub (until its API answers), every device's link (in the background), and the pump."""
        self.hub.start()
        for device in self.devices:
            device.link.start()
        self.pump.start()


@contextmanager
def telemetry_world(folder: Path, db_url: str, groups: dict[str, tuple[int, bool]], *, resend_after: float,
                    sample_every: float) -> Iterator[TelemetryWorld]:  # fmt: skip
    """A fresh cluster, workspace and hub on ``db_url`` (an empty database); ``groups``: name -> (devices, confirms).

    Nothing is started but the cluster: :meth:`TelemetryWorld.start`. Everything is stopped on the way out.
    """
    ws, _world = make_hub_workspace(folder / "ws", modules=1)
    names = {name: device_ids(f"{name}-", 0, count) for name, (count, _confirms) in groups.items()}
    ids = [device for group in names.values() for device in group]
    with HubServer(HubConfig(workspace=ws.root, db_url=db_url, embedded_broker=True, broker_port=0, port=0)) as seed:
        seed.services.fleet.create_devices((device, {"site": "lab"}) for device in ids)
    with NatsCluster(folder / "nats", fleet_users(ids)) as cluster:
        victim = [node.name for node in cluster.nodes].index(prepare_stream(cluster, 0))
        hub_node, other = (victim + 1) % 3, (victim + 2) % 3
        hub = HubProcess(ws.root, cluster.urls[hub_node], folder / "hub.log", username="hub-0", password=HUB_PASSWORD,
                         db_url=db_url,
                         extra=("--nats-inbound", f"nats://127.0.0.1:{cluster.nodes[hub_node].client_port}"))
        orders = [[hub_node, other, victim], [other, hub_node, victim]]
        devices = {name: [TelemetryDevice(device, orders[n % 2], cluster, folder / "queues" / device,
                                          confirms=groups[name][1], resend_after=resend_after)
                          for n, device in enumerate(group)]
                   for name, group in names.items()}  # fmt: skip
        pump = Pump([device for group in devices.values() for device in group], sample_every)
        world = TelemetryWorld(cluster, victim, hub_node, hub, devices, pump, db_url)
        try:
            yield world
        finally:
            world.pump.stop()
            for device in world.devices:
                device.link.stop()
            hub.stop()
