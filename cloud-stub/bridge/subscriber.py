"""``Subscriber``: device messages in (``reported``, ``telemetry``, ``online``), handed to the service.

paho's network thread only checks the topic and the size and puts the message on a
queue; one worker thread decodes it and calls :class:`~edgeship.hub.service.HubService`
(database writes), so a slow write never stalls MQTT keep-alives or acknowledgements.
A bad message (unknown topic, too large, not JSON, wrong shape, unknown device) is
logged as one line and dropped; nothing a device sends can stop the worker.

Reported states are written in batches: the worker takes whatever has queued up
(at most :data:`BATCH` messages) and stores all the reports among them in one
transaction (``record_reported_many``). One transaction per report cost about
1 ms on SQLite, which at 10,000 devices was most of a fan-out's tail
(``benchmarks/fleet/RESULTS.md``); a device that reported twice in one batch
keeps its last report.

On MQTT 5 the subscriptions are shared (``$share/hub/...``): several hub replicas
split the devices' messages between them. MQTT 3.1.1 has no shared subscriptions,
so there each replica receives everything (run one replica).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from edgeship.errors import EdgeshipError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.service import HubService
from edgeship.mqtt import TOPIC_ROOT, DeviceTopic

__all__ = ["BATCH", "INBOUND_CHANNELS", "MAX_MESSAGE_BYTES", "QUEUE_SIZE", "Subscriber", "subscriptions"]

MAX_MESSAGE_BYTES = 256 * 1024  # a reported state or telemetry batch
QUEUE_SIZE = 100_000  # messages waiting for the worker; beyond this they are dropped (and logged)
BATCH = 1000  # queued messages the worker takes at once (their reports go in one transaction)
INBOUND_CHANNELS = ("reported", "telemetry", "online")

log = logging.getLogger("edgeship.hub.bridge")

Task = Callable[[], None]
Item = Task | tuple[DeviceTopic, bytes] | None  # None stops the worker


def subscriptions(protocol: str, group: str = "hub") -> list[tuple[str, int]]:
    """``(topic filter, QoS)`` pairs the hub subscribes to; responses are never shared (see methods.py)."""
    prefix = f"$share/{group}/" if protocol == "5" else ""
    shared = [(f"{prefix}{TOPIC_ROOT}/+/{channel}", 1) for channel in INBOUND_CHANNELS]
    return [*shared, (f"{TOPIC_ROOT}/+/responses/+", 1)]


class Subscriber:
    """The inbound queue and its worker thread; :meth:`submit` also runs the publisher's republish."""

    def __init__(self, service: HubService, queue_size: int = QUEUE_SIZE) -> None:
        self.service = service
        self._queue: queue.Queue[Item] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self.dropped = 0  # messages refused (malformed, unknown device, queue full)
        self.handled = 0  # messages the service accepted

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="edgeship-hub-inbound", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, task: Task | tuple[DeviceTopic, bytes]) -> bool:
        try:
            self._queue.put_nowait(task)
            return True
        except queue.Full:
            return False

    def on_message(self, topic: DeviceTopic, payload: bytes) -> None:
        """Called in paho's network thread: checks only what is free to check, then queues."""
        if len(payload) > MAX_MESSAGE_BYTES:
            self._drop(topic, f"{len(payload)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
            return
        if not self.submit((topic, payload)):
            self._drop(topic, f"the hub's inbound queue is full ({self._queue.maxsize} messages)")

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            reports: list[tuple[DeviceTopic, dict[str, Any]]] = []
            for item in batch:
                if item is None:
                    continue
                try:
                    if callable(item):
                        item()
                    elif item[0].channel == "reported":
                        if item[1]:  # an empty payload clears a retained message: nothing to record
                            reports.append((item[0], _json_object(item[1])))
                    else:
                        self._handle(*item)
                except _Malformed as exc:
                    self._drop(item[0], str(exc))  # type: ignore[index]  # only messages raise _Malformed
                except Exception:  # the worker must survive anything a message or the database does
                    log.exception("the hub's inbound worker failed on a task; continuing")
            if reports:
                self._record_reports(reports)
            if any(item is None for item in batch):
                return

    def _record_reports(self, reports: list[tuple[DeviceTopic, dict[str, Any]]]) -> None:
        try:
            stored, refused = self.service.record_reported_many((t.device_id, state) for t, state in reports)
        except Exception:  # a database outage loses this batch of reports, not the worker
            log.exception("the hub could not store %d reported states; continuing", len(reports))
            return
        self.handled += len(stored)
        topics = {t.device_id: t for t, _ in reports}
        for device_id, why in refused:
            self._drop(topics[device_id], why)

    def _handle(self, topic: DeviceTopic, payload: bytes) -> None:
        device_id = topic.device_id
        try:
            if topic.channel == "online":
                self.service.record_online(device_id, _online(payload))
            elif topic.channel == "reported":
                if not payload:
                    return  # a cleared retained message: nothing to record
                self.service.record_reported(device_id, _json_object(payload))
            elif topic.channel == "telemetry":
                self.service.record_telemetry(device_id, _json_object(payload))
            else:
                return
        except HubNotFoundError:
            self._drop(topic, "no such device on the hub (create it with 'edgeship device create')")
            return
        except EdgeshipError as exc:
            self._drop(topic, str(exc))
            return
        self.handled += 1

    def _drop(self, topic: DeviceTopic, why: str) -> None:
        self.dropped += 1
        log.warning("dropped %s message from device %r: %s", topic.channel, topic.device_id, why)


class _Malformed(EdgeshipError):
    pass


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
