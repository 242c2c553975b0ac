"""``Subscriber``: device messages in (``reported``, ``telemetry``, ``online``), handed to the fleet service.

paho's network thread only checks the topic and asks the :class:`InboundGate`
(``limits.py``) whether the message may be queued: under its channel's size, within
the device's rate, within the device's share and the hub's byte budget. One worker
thread decodes what was admitted and calls :class:`~edgeship.hub.services.Fleet`
(database writes), so a slow write never stalls MQTT keep-alives or acknowledgements,
and a flood costs the hub at most ``InboundLimits.queue_bytes`` of queued work.
A message that is dropped (over a limit, not JSON, wrong shape, unknown device) is
counted per device, channel and reason (:meth:`Subscriber.stats`); the worker logs
one summary line per ``log_interval`` with drops, never one line per message, and
nothing a device sends can stop the worker.

Reported states and telemetry are written in batches: the worker takes whatever has
queued up (at most :data:`BATCH` messages) and stores all the reports among them in one
transaction (``record_reported_many``), then all the telemetry batches in another
(``record_telemetry_many``, ADR 0052). One transaction per report cost about 1 ms on
SQLite, which at 10,000 devices was most of a fan-out's tail, and one per telemetry
batch held a replica to ~118 batches/s (``benchmarks/fleet/RESULTS.md``); a device that
reported twice in one batch keeps its last report, and a device's telemetry batches
are stored in the order they came. Each message's PUBACK is sent after the transaction
that stored it committed, never on receipt: a hub killed in between leaves the message
in its broker session. A hub that restarts would also be sent the retained reports
again when it subscribes, but a replica that is gone for good is only drained
(``adopt.py``), which gets the unacknowledged messages alone.

When a batch's transaction fails: the reports are lost to this hub (logged with their
count; a device reports again on its next change and on every connect). The telemetry
batches are stored again one transaction each, so one batch the database refuses
costs only itself; what still fails is logged with its count and not confirmed to the
device (``telemetry-stored``, ADR 0049), whose agent sends it again. The PUBACKs are
sent either way, as before: a database outage must not fill the broker's session.

On MQTT 5 the subscriptions are shared (``$share/hub/...``): several hub replicas
split the devices' messages between them, and a gone replica's share, which Mosquitto
keeps in its session, is drained by a survivor through a Subscriber of its own
(``adopt.py``, ADR 0037). MQTT 3.1.1 has no shared subscriptions,
so there each replica receives everything (run one replica).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeship.errors import EdgeshipError, InputError
from edgeship.hub.bridge.limits import DropCounter, InboundGate, InboundLimits, InboundStats
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services import Fleet
from edgeship.mqtt import TOPIC_ROOT, DeviceTopic

__all__ = ["BATCH", "INBOUND_CHANNELS", "MAX_MESSAGE_BYTES", "Subscriber", "subscriptions"]

MAX_MESSAGE_BYTES = InboundLimits().telemetry.max_bytes  # the largest default payload (a telemetry batch)
BATCH = 1000  # queued messages the worker takes at once (their reports go in one transaction)
INBOUND_CHANNELS = ("reported", "telemetry", "online")
NO_DEVICE = "(no device)"  # what drops of messages on topics that name no valid device are counted under

log = logging.getLogger("edgeship.hub.bridge")

Task = Callable[[], None]
Ack = Callable[[], None]  # sends a message's PUBACK
Item = Task | tuple[DeviceTopic, bytes, Ack | None] | None  # None stops the worker


def subscriptions(protocol: str, group: str = "hub", *, inbound: bool = True) -> list[tuple[str, int]]:
    """``(topic filter, QoS)`` pairs the hub subscribes to; responses are never shared (see methods.py).

    ``inbound=False``: the devices' messages come another way (a NATS stream, ``nats_inbound.py``), responses only.
    """
    prefix = f"$share/{group}/" if protocol == "5" else ""
    shared = [(f"{prefix}{TOPIC_ROOT}/+/{channel}", 1) for channel in INBOUND_CHANNELS] if inbound else []
    return [*shared, (f"{TOPIC_ROOT}/+/responses/+", 1)]


class Subscriber:
    """The inbound queue and its worker thread; :meth:`submit` also runs the publisher's republish.

    Invariant: every message :meth:`on_message` queues is charged to the gate until the
    worker has handled it (and, for reports, stored its batch), then released; its
    acknowledgement is sent only after that store committed (or the message was dropped).
    """

    def __init__(self, fleet: Fleet, limits: InboundLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.limits = limits or InboundLimits()
        self.gate = InboundGate(self.limits, clock)
        self.drops = DropCounter(self.limits.log_interval, clock)
        self._queue: queue.Queue[Item] = queue.Queue()  # bounded in bytes by the gate, not in messages
        self._thread: threading.Thread | None = None
        self.handled = 0  # messages the fleet accepted

    @property
    def dropped(self) -> int:
        """Messages dropped since start, for any reason."""
        return self.drops.total

    def stats(self) -> InboundStats:
        return InboundStats(handled=self.handled, dropped=self.drops.total, by_reason=dict(self.drops.by_reason),
                            by_device=dict(self.drops.by_device), queued_bytes=self.gate.queued_bytes,
                            peak_bytes=self.gate.peak_bytes)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="edgeship-hub-inbound", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self.log_summary(force=True)

    def submit(self, task: Task) -> bool:
        """Run ``task`` on the worker thread, after the messages already queued."""
        self._queue.put_nowait(task)
        return True

    def on_message(self, topic: DeviceTopic, payload: bytes, ack: Ack | None = None) -> None:
        """Called in paho's network thread: the gate decides, without I/O, whether the message is queued.

        ``ack`` (the message's PUBACK) runs once the message is stored, or dropped: a report only after the
        transaction that stores its batch committed, so a hub killed before that commit leaves the message
        unacknowledged in its broker session (sent again on reconnect, or drained by a replica, ``adopt.py``).
        A message the gate refuses is acknowledged at once.
        """
        reason = self.gate.admit(topic.device_id, topic.channel, len(payload))
        if reason is not None:
            limit = self.limits.channel(topic.channel).max_bytes
            self._drop(topic, reason, f"{len(payload)} bytes, over the {limit}-byte limit of {topic.channel} messages"
                       if reason == "too-large" else None)
            if ack is not None:
                ack()
            return
        self._queue.put_nowait((topic, payload, ack))

    def drop_foreign(self, topic: str) -> None:
        """A message on a subscribed topic that is no device topic of the contract (paho's thread)."""
        self.drops.count(NO_DEVICE, "-", "malformed", f"{topic[:200]!r} is not a topic of the edgeship contract")

    def log_summary(self, *, force: bool = False) -> None:
        """Log the drops of the interval that ended (one line), if any; the worker calls it as time passes."""
        line = self.drops.summary(force=force)
        if line is not None:
            log.warning("%s", line)
        if force or line is not None:
            self.gate.prune()

    def _work(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=min(self.limits.log_interval, 1.0))]
            except queue.Empty:
                batch = []
            while batch and len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self.drops.due():
                self.log_summary()
            pending = _Pending()
            messages: list[tuple[DeviceTopic, bytes]] = []
            for item in batch:
                if item is None:
                    continue
                if callable(item):  # a task runs after everything queued before it is stored and acknowledged
                    self._flush(pending)
                    self._run(item)
                    continue
                topic, payload, ack = item
                messages.append((topic, payload))
                if ack is not None:
                    pending.acks.append(ack)
                try:
                    if topic.channel == "reported":
                        if payload:  # an empty payload clears a retained message: nothing to record
                            pending.reports.append((topic, _json_object(payload)))
                    elif topic.channel == "telemetry":
                        pending.telemetry.append((topic, _json_object(payload)))
                    else:
                        self._handle(topic, payload)
                except _Malformed as exc:
                    self._drop(topic, "malformed", str(exc))
                except Exception:  # the worker must survive anything a message or the database does
                    log.exception("the hub's inbound worker failed on a message; continuing")
            self._flush(pending)
            for topic, payload in messages:
                self.gate.release(topic.device_id, len(payload))
            if any(item is None for item in batch):
                return

    def _flush(self, pending: _Pending) -> None:
        """Store the reports, then the telemetry, gathered so far (a transaction each); then acknowledge them all."""
        if pending.reports:
            self._record_reports(pending.reports)
        if pending.telemetry:
            self._record_telemetry(pending.telemetry)
        for ack in pending.acks:
            self._run(ack)
        pending.reports, pending.telemetry, pending.acks = [], [], []

    @staticmethod
    def _run(task: Task) -> None:
        try:
            task()
        except Exception:  # the worker must survive anything a task does
            log.exception("the hub's inbound worker failed on a task; continuing")

    def _record_reports(self, reports: list[tuple[DeviceTopic, dict[str, Any]]]) -> None:
        try:
            stored, refused = self.fleet.record_reported_many((t.device_id, state) for t, state in reports)
        except Exception:  # a database outage loses this batch of reports, not the worker
            log.exception("the hub could not store %d reported states; continuing", len(reports))
            return
        self.handled += len(stored)
        topics = {t.device_id: t for t, _ in reports}
        for device_id, why in refused:
            self._drop(topics[device_id], "unknown-device" if why.startswith("No device ") else "schema", why)

    def _record_telemetry(self, batches: list[tuple[DeviceTopic, dict[str, Any]]]) -> None:
        """Store telemetry batches in one transaction; if it fails, each alone (see the module's docstring)."""
        items = [(t.device_id, batch) for t, batch in batches]
        try:
            outcomes = self.fleet.record_telemetry_many(items)
        except Exception:
            log.exception("the hub could not store %d telemetry batches in one transaction; storing them one at a "
                          "time", len(items))
            outcomes = self._record_telemetry_alone(items)
        for (topic, _), outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, EdgeshipError):
                self._refuse(topic, outcome)
            elif outcome is not _FAILED:
                self.handled += 1

    def _record_telemetry_alone(self, items: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        outcomes: list[Any] = []
        failed: Exception | None = None
        for item in items:
            try:
                outcomes.extend(self.fleet.record_telemetry_many([item]))
            except Exception as exc:
                failed = exc
                outcomes.append(_FAILED)
        if failed is not None:
            log.error("the hub could not store %d of %d telemetry batches (last error: %s); their devices were not "
                      "told, so their agents send them again", outcomes.count(_FAILED), len(items), failed)
        return outcomes

    def _handle(self, topic: DeviceTopic, payload: bytes) -> None:
        device_id = topic.device_id
        try:
            if topic.channel == "online":  # reports and telemetry are gathered and stored in batches (_flush)
                self.fleet.record_online(device_id, _online(payload))
            else:
                return
        except _Malformed:
            raise
        except EdgeshipError as exc:
            self._refuse(topic, exc)
            return
        self.handled += 1

    def _refuse(self, topic: DeviceTopic, exc: EdgeshipError) -> None:
        """Count a message the fleet refused: an unknown device, its content, or another rule."""
        if isinstance(exc, HubNotFoundError):
            self._drop(topic, "unknown-device")
        elif isinstance(exc, InputError):
            self._drop(topic, "schema", str(exc))
        else:
            self._drop(topic, "refused", str(exc))

    def _drop(self, topic: DeviceTopic, reason: str, detail: str | None = None) -> None:
        self.drops.count(topic.device_id, topic.channel, reason, detail)
        log.debug("dropped %s message from device %r: %s", topic.channel, topic.device_id, detail or reason)


class _Malformed(EdgeshipError):
    pass


_FAILED = object()  # a telemetry batch whose store failed (the database), neither stored nor refused


@dataclass
class _Pending:
    """What the worker gathered since its last flush: reports and telemetry to store together, then PUBACKs to send."""

    reports: list[tuple[DeviceTopic, dict[str, Any]]] = field(default_factory=list)
    telemetry: list[tuple[DeviceTopic, dict[str, Any]]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Malformed(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _Malformed("not a JSON object")
    return data


def _online(payload: bytes) -> bool:
    if payload in (b"1", b"0"):
        return payload == b"1"
    raise _Malformed(f"payload must be '1' or '0', got {payload[:16]!r}")
