"""``Resync``: after devices come back online, recover what a broker cluster may have lost on the way (ADR 0044).

A NATS cluster that loses a node can lose, for the updates made around the loss, a
retained document (live subscribers got it, the retained store kept the previous one),
a retained report, or a report on its way to the hub's session (ADR 0039,
"Consequences"). Neither side notices: the hub's own connection may be on a node that
stayed up. What the hub does see is the devices of the dead node coming back: each
agent publishes ``online`` ``"1"`` on every connect (and its last report again). A live
(not retained) ``"1"`` is the trigger.

A pass, once devices stop coming back for :data:`QUIET` seconds (at the latest
:data:`MAX_DELAY` seconds after the first of them; then up to :data:`FOLLOW_UPS` more,
:data:`MAX_DELAY` apart, while some are still waited for), looks at the devices the hub
still waits for: those whose stored report answers an older document than their
newest one, or none at all (:func:`lagging`). For each of them it

1. reads the retained report again: a QoS 0 subscription to the device's own
   ``reported`` topic, which the broker answers with the retained message (on MQTT 5
   too, where the hub's wildcard is a shared subscription and gets no retained
   messages); the subscriptions are dropped :data:`SETTLE` seconds later. The report
   is stored as any other (an upsert that never goes back a sequence);
2. publishes its newest document again: the **stored signed bytes, unchanged**, read
   on the publisher's thread as the reconnect republish does, so a newer document
   handed over meanwhile is never overtaken by an older one. A device that already
   applies it does not apply it again (same bytes) but sends its last report again (the
   agent's link does so for its document arriving live again), so a report lost on
   the way is sent once more; no device ever sees a new document, let alone two
   contents under one sequence.

Both are what the hub already does for every device when its own connection comes
back; a pass does it for the waiting devices only, so its cost follows the rollout in
progress and the devices offline, not the fleet. With Mosquitto nothing is lost, and
a pass only repeats messages both sides treat idempotently. Several replicas may run
passes at once (on MQTT 3.1.1 each one receives every ``online``): the same stored
bytes twice and the same report stored twice change nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho

from edgeship.hub.bridge.publisher import DocumentPublisher
from edgeship.hub.services import Outgoing
from edgeship.hub.store import HubStore
from edgeship.hub.store.records import DesiredRecord, ReportedRecord
from edgeship.mqtt import device_topic

__all__ = ["CHUNK", "FOLLOW_UPS", "MAX_DELAY", "QUIET", "SETTLE", "Resync", "ResyncPass", "lagging"]

QUIET = 5.0  # seconds without a device coming back before a pass runs
MAX_DELAY = 30.0  # seconds after the first device came back at the latest (a long reconnect storm)
SETTLE = 5.0  # seconds the per-device subscriptions stay: their retained reports arrive well within that
CHUNK = 500  # topics per SUBSCRIBE / UNSUBSCRIBE packet
FOLLOW_UPS = 2  # more passes, MAX_DELAY apart, while devices are still waited for (a repeat can be lost too)

log = logging.getLogger("edgeship.hub.bridge")


def lagging(documents: Mapping[str, DesiredRecord], reports: Mapping[str, ReportedRecord]) -> list[str]:
    """Devices whose stored report answers an older document than their newest, or which never reported."""
    waiting = []
    for device_id, document in documents.items():
        report = reports.get(device_id)
        applied = report.state.get("lastAppliedSequence") if report is not None else None
        if not isinstance(applied, int) or applied < document.sequence:
            waiting.append(device_id)
    return sorted(waiting)


@dataclass(frozen=True)
class ResyncPass:
    """What one pass did: the devices it looked at (their reports re-read, their documents sent again)."""

    devices: tuple[str, ...]
    documents: int


class Resync:
    """The trigger (:meth:`device_online`, paho's thread), its timer thread, and the pass (:meth:`run`).

    Invariant: a pass never publishes a document older than one the publisher already handed to the broker
    for that device (the newest is read from the store inside the publisher's job).
    """

    def __init__(self, client: paho.Client, store: HubStore, publisher: DocumentPublisher, *,
                 quiet: float = QUIET, max_delay: float = MAX_DELAY, settle: float = SETTLE,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.client = client
        self.store = store
        self.publisher = publisher
        self.quiet, self.max_delay, self.settle = quiet, max_delay, settle
        self.clock = clock
        self.passes: list[ResyncPass] = []  # what each pass did (the log says it too)
        self._lock = threading.Lock()
        self._first: float | None = None  # when the first device came back since the last pass
        self._last = 0.0  # when the latest did
        self._again: float | None = None  # when a follow-up pass is due
        self._follow_ups = 0  # follow-up passes left
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def device_online(self) -> None:
        """A device published a live ``online`` ``"1"``: schedule a pass (paho's thread; no I/O)."""
        with self._lock:
            now = self.clock()
            if self._first is None:
                self._first = now
            self._last = now
            self._follow_ups = FOLLOW_UPS
        self._wake.set()

    def due(self) -> float | None:
        """Seconds until the scheduled pass (0: now), or None when none is scheduled."""
        with self._lock:
            times = [] if self._first is None else [min(self._last + self.quiet, self._first + self.max_delay)]
            times += [] if self._again is None else [self._again]
            return max(min(times) - self.clock(), 0.0) if times else None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgeship-hub-resync", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = self.due()
            if wait is None or wait > 0:  # a device coming back (or stop) wakes it early: the time moves
                self._wake.wait(wait)
                self._wake.clear()
                continue
            with self._lock:
                self._first = self._again = None
            try:
                done = self.run()
            except Exception:  # the next device that comes back schedules another pass
                log.exception("re-reading reports and re-sending documents after devices came back failed")
                continue
            with self._lock:
                if done.devices and self._follow_ups > 0 and self._first is None:
                    self._follow_ups -= 1
                    self._again = self.clock() + self.max_delay

    def run(self) -> ResyncPass:
        """One pass over the devices the hub waits for (see the module's docstring)."""
        waiting = lagging(self.store.latest_desired(), self.store.reported())
        if not waiting or not self.client.is_connected():
            done = ResyncPass((), 0)
            self.passes.append(done)
            return done
        topics = [device_topic(device_id, "reported") for device_id in waiting]
        self._each_chunk(topics, lambda chunk: self.client.subscribe([(topic, 0) for topic in chunk]))
        sent = self.publisher.republish(lambda: self._newest(waiting))
        self._stopping.wait(self.settle)
        self._each_chunk(topics, self.client.unsubscribe)
        done = ResyncPass(tuple(waiting), sent)
        self.passes.append(done)
        log.info("devices came back: re-read the retained reports of %d waiting device(s) and sent %d newest "
                 "document(s) again", len(waiting), sent)  # fmt: skip
        return done

    def _newest(self, device_ids: Sequence[str]) -> list[Outgoing]:
        """The stored newest document of each (publisher's thread: after every document handed over before)."""
        return [Outgoing(r.device_id, r.sequence, r.envelope.encode("utf-8"))
                for r in self.store.latest_desired(device_ids).values()]  # fmt: skip

    @staticmethod
    def _each_chunk(topics: Sequence[str], send: Callable[[list[str]], object]) -> None:
        for start in range(0, len(topics), CHUNK):
            send(list(topics[start:start + CHUNK]))
