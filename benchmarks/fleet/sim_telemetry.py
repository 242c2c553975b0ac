"""Telemetry for the simulated devices (``simulator.py``), sent as the agent sends it (ADR 0049).

Each device gets the agent's own parts: an on-disk :class:`TelemetryQueue` in its own
folder (under the folder the caller gives), :class:`StoredConfirmations` fed from the
device's ``telemetry-stored`` subscription, and a :class:`TelemetrySender` (a short
``resend_after`` passed in) whose ``pump()`` runs every ``pump_every`` seconds from the
fleet's loop, as the agent pumps every 0.2 s. A new agent's sender counts the broker's
PUBACK until its first confirmation arrives; ``hub_confirms=True`` starts each queue as
that of an agent that has seen this hub confirm before (kept in its folder), so every
batch waits for the hub from the first. While :attr:`Telemetry.sampling` is on,
each device pushes a sample (``time``, ``cpuPercent``, ``memoryBytes``, ``modules: {}``;
the queue sets ``seq``) every ``interval`` seconds, the devices spread evenly over the
interval; :attr:`Telemetry.pushed` records every (device, seq) pushed, for a test to
count against what the hub stored.

The publisher the sender is given (:class:`DeviceTelemetry`) publishes a batch QoS 1 on
the device's current paho client (None while it is not connected). An agent keeps one
client for good, and paho sends an unacknowledged QoS 1 message again when that client
reconnects (persistent session); a simulated device that moves to another node gets a
new client (``tests/scale/nats_fleet.py``), so the batch the old client never got
through is published again on the new one once it connects: the same thing.

Off unless a :class:`Telemetry` is given to ``Fleet(..., telemetry=...)``; the fleet
benchmarks send none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from edgeship.agent.telemetry.confirm import StoredConfirmations
from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.sender import TelemetrySender
from edgeship.mqtt import device_topic

__all__ = ["DeviceTelemetry", "Telemetry"]


class _Sent:
    """A published batch: paho's message info on the client that has it now, and its bytes for a new client."""

    __slots__ = ("client", "info", "payload")

    def __init__(self, client: paho.Client, info: paho.MQTTMessageInfo, payload: bytes) -> None:
        self.client, self.info, self.payload = client, info, payload

    def is_published(self) -> bool:
        return bool(self.info.is_published())


class DeviceTelemetry:
    """One device's queue, confirmations and sender; also the publisher its sender publishes through."""

    __slots__ = ("client", "clock", "confirmations", "device_id", "due", "first_sent", "phase", "queue", "sender",
                 "sent", "stored_topic", "taken", "topic")

    def __init__(self, device_id: str, folder: Path, resend_after: float, clock: Callable[[], float], *,
                 hub_confirms: bool = False) -> None:
        self.device_id = device_id
        self.topic = device_topic(device_id, "telemetry")
        self.stored_topic = device_topic(device_id, "telemetry-stored")
        self.queue = TelemetryQueue(folder)
        if hub_confirms:
            self.queue.set_hub_confirms(True)  # as an agent that saw this hub confirm before keeps it on disk
        self.confirmations = StoredConfirmations()
        self.sender = TelemetrySender(device_id, self.queue, self, self.confirmations, resend_after=resend_after,
                                      clock=clock)
        self.clock = clock
        self.first_sent: dict[int, float] = {}  # highest seq of a batch -> when it was first published
        self.client: paho.Client | None = None  # the session's client once it connected
        self.sent: _Sent | None = None  # the newest batch published
        self.due = 0.0  # when the next sample is taken (clock seconds)
        self.phase = 0.0  # seconds after sampling started of its second sample; the next ones each interval on
        self.taken = 0  # samples pushed since sampling started

    def publish_telemetry(self, batch: dict[str, Any]) -> _Sent | None:
        """Publish one batch QoS 1 on the device's client; None when it is not connected (as the agent's link)."""
        client = self.client
        if client is None or not client.is_connected():
            return None
        payload = json.dumps(batch, separators=(",", ":")).encode()
        self.sent = _Sent(client, client.publish(self.topic, payload, qos=1), payload)
        self.first_sent.setdefault(batch["samples"][-1]["seq"], self.clock())
        return self.sent

    def note(self, payload: bytes) -> float | None:
        """Take a ``telemetry-stored`` message; the seconds since the batch it confirms was first published, or None
        when it confirms nothing new."""
        before = self.confirmations.seq
        self.confirmations.note(payload)
        after = self.confirmations.seq
        confirmed = [seq for seq in self.first_sent if before < seq <= after]
        sent = [self.first_sent.pop(seq) for seq in confirmed]
        return self.clock() - min(sent) if sent else None

    def connected(self, client: paho.Client) -> None:
        """The session is up on ``client``; a batch a previous client did not get through goes out on this one."""
        self.client = client
        sent = self.sent
        if sent is not None and sent.client is not client and not sent.is_published():
            sent.client, sent.info = client, client.publish(self.topic, sent.payload, qos=1)


class Telemetry:
    """The telemetry of every simulated device, kept in folders under ``root``; one per test, shared by its fleets."""

    def __init__(self, root: Path, *, interval: float = 5.0, resend_after: float = 2.0, pump_every: float = 0.2,
                 hub_confirms: bool = False, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if interval <= 0 or pump_every <= 0:
            raise ValueError(f"interval ({interval}) and pump_every ({pump_every}) must be above 0")
        self.root = Path(root)
        self.interval = interval
        self.resend_after = resend_after
        self.pump_every = pump_every
        self.hub_confirms = hub_confirms  # each new queue starts waiting for the hub's confirmations
        self.clock = clock
        self.now = now
        self.devices: dict[str, DeviceTelemetry] = {}
        self.sampling = False
        self.started = 0.0  # when sampling started (clock seconds)
        self.pushed: list[tuple[str, int]] = []  # every (device, seq) pushed, in order
        self.latencies: list[tuple[float, float]] = []  # (when, seconds from first publish to confirmation)

    def attach(self, device_id: str) -> DeviceTelemetry:
        """The device's telemetry (made on first use; a device moved to another fleet keeps its own)."""
        device = self.devices.get(device_id)
        if device is None:
            device = DeviceTelemetry(device_id, self.root / device_id, self.resend_after, self.clock,
                                     hub_confirms=self.hub_confirms)
            self.devices[device_id] = device
        return device

    def start(self, first_within: float | None = None) -> None:
        """Every device samples from now on: its first sample within ``first_within`` seconds (default: one
        interval), then from the end of those one each ``interval`` seconds, the devices spread evenly over it."""
        spread = self.interval if first_within is None else first_within
        self.started, count = self.clock(), max(len(self.devices), 1)
        for index, device in enumerate(self.devices.values()):
            device.due, device.phase = self.started + spread * index / count, spread + self.interval * index / count
            device.taken = 0
        self.sampling = True

    def stop(self) -> None:
        """No more samples; what is queued is still sent until the hub confirms it."""
        self.sampling = False

    def pump(self, device_ids: Iterable[str]) -> None:
        """Take the samples that are due, then pump each sender once (the fleet calls it every ``pump_every``)."""
        now = self.clock()
        for device_id in device_ids:
            device = self.devices[device_id]
            if self.sampling and now >= device.due:
                device.taken += 1
                device.due = self.started + device.phase + self.interval * (device.taken - 1)
                sample = {"time": self.now().isoformat(), "cpuPercent": 12.5, "memoryBytes": 64 << 20, "modules": {}}
                self.pushed.append((device_id, device.queue.push(sample)))
            device.sender.pump()

    def note(self, device_id: str, payload: bytes) -> None:
        """A ``telemetry-stored`` message for the device (from the fleet's ``on_message``)."""
        latency = self.devices[device_id].note(payload)
        if latency is not None:
            self.latencies.append((self.clock(), latency))

    def pending(self) -> dict[str, int]:
        """Devices whose queue still holds samples the hub has not confirmed: device -> samples."""
        return {d.device_id: n for d in self.devices.values() if (n := len(d.queue))}

    def copies(self) -> int:
        """Batches published again for want of a confirmation, over all devices."""
        return sum(d.sender.copies for d in self.devices.values())

    def unconfirmed(self) -> list[str]:
        """Devices that have had no ``telemetry-stored`` message yet: their sender still counts the broker's PUBACK
        as delivery (``sender.py``), so a broker that loses an acknowledged message loses their samples."""
        return [d.device_id for d in self.devices.values() if not d.confirmations.count]
