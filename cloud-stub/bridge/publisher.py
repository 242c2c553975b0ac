"""``DocumentPublisher``: signed documents out, retained, QoS 1, on ``edgeship/v1/devices/{id}/desired``.

The hot path (:meth:`publish`) is a hand-off: the batch goes onto the publisher's own
queue and the caller (a request that just stored a fleet's documents) returns at once; a
change to a few devices, a trust root and a forget wait until paho has them. One
thread, ``edgeship-publisher``, takes the queue in order and hands the documents to
paho without waiting for any acknowledgement (paho writes from its network thread):
on MQTT 3.1.1 as pre-encoded PUBLISH packets on paho's own output queue
(``packets.py``: about 2 µs a document instead of paho's 50-60 µs), else one
``publish()`` each.
Everything the publisher sends (documents, trust roots, a deleted device's clean-up,
the republish on connect) goes through that one queue, so it leaves in the order it
was handed over: a trust root before any document handed over after it.

Two rules keep the retained document of each device the newest one:

- a document older than one already published for that device is skipped (two
  request threads may finish re-evaluation out of order);
- while the broker is unreachable nothing is queued in paho: the store is the
  queue. On every (re)connect :meth:`republish` sends the newest document of every
  device again, so a broker that lost its retained messages, or missed documents
  issued while it was down, ends up with the newest state.

Delivery (ADR 0019): a document handed over here and lost in a crash before paho
wrote it is sent again by the next start's republish, exactly as one lost in paho's
own memory queue was; the store, not this queue, is what must hold it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from functools import partial

import paho.mqtt.client as paho

from edgeship.hub.bridge.packets import RetainedPackets
from edgeship.hub.services import Outgoing
from edgeship.mqtt import device_topic

__all__ = ["WAIT_BELOW", "DocumentPublisher"]

log = logging.getLogger("edgeship.hub.bridge")

Job = Callable[[], None]

WAIT_BELOW = 256  # documents: a smaller batch's publish() returns once paho has it (a larger one at once)
WAIT_SECONDS = 10.0  # at most, for a job a caller waits for (the thread never blocks on the network)


class DocumentPublisher:
    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self._lock = threading.Lock()  # one job at a time (the thread's, or one run inline once it is closed)
        self._newest: dict[str, int] = {}  # device id -> newest sequence handed to paho
        self.skipped_offline = 0  # documents not sent because the broker was down (republished on connect)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()  # guards starting and closing the thread
        self._closed = False
        self._packets = RetainedPackets.for_client(client)  # None: paho's publish() for each document

    # DeviceLink's outbound half: each is a hand-off -----------------------------------------------
    def publish(self, batch: Sequence[Outgoing]) -> None:
        """``DeviceLink.publish``: hand the batch to the publishing thread.

        A batch of fewer than :data:`WAIT_BELOW` documents (a change to a few devices) returns
        once paho has it, as a direct call did; a larger one returns at once.
        """
        self._submit(partial(self._send_documents, list(batch)), wait=len(batch) < WAIT_BELOW)

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        """The trust-root chain, retained on each device's ``trust-root`` topic; before any document handed over
        after it (same queue, same connection, so the broker keeps the order). Offline: sent again on reconnect."""
        self._submit(partial(self._send_trust_root, message, list(device_ids)), wait=True)

    def forget(self, device_id: str) -> None:
        """A deleted device: clear its retained document and trust root, and forget its newest sequence, so a
        device created again under the id (sequences from 1) gets its documents."""
        self._submit(partial(self._forget, device_id), wait=True)

    def republish(self, current: Callable[[], Sequence[Outgoing]], timeout: float = 60.0) -> int:
        """Send the newest document of every device again, after everything handed over before; returns how many.

        ``current`` reads them when the job runs. Waits (at most ``timeout`` seconds) for the job: the bridge
        reports the republish done only once the documents are in paho's hands.
        """
        count = [0]

        def job() -> None:
            count[0] = self._send_current(current)

        if not self._submit(job, wait=True, timeout=timeout):
            log.warning("the republish of every newest document did not finish within %g s", timeout)
        return count[0]

    def close(self, timeout: float = 30.0) -> None:
        """Send what was handed over, then stop the thread; later hand-offs run in the caller's thread."""
        with self._state:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._jobs.put(None)
        thread.join(timeout)

    # the thread -------------------------------------------------------------------------------------
    def _submit(self, job: Job, *, wait: bool = False, timeout: float = WAIT_SECONDS) -> bool:
        """Queue ``job`` (after everything handed over before); with ``wait``, until it ran (False: timed out)."""
        done = threading.Event()

        def run() -> None:
            try:
                job()
            finally:
                done.set()

        with self._state:
            closed = self._closed
            if not closed and self._thread is None:
                self._thread = threading.Thread(target=self._work, name="edgeship-publisher", daemon=True)
                self._thread.start()
            if not closed:
                self._jobs.put(run)
        if closed:
            with self._lock:
                run()
        return done.wait(timeout) if wait else True

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                with self._lock:
                    job()
            except Exception:  # a job must never stop the thread: the next connect republishes anyway
                log.exception("publishing to the broker failed; the next connect sends every newest document again")

    # jobs (under self._lock) ------------------------------------------------------------------------
    def _send_documents(self, batch: Sequence[Outgoing]) -> None:
        if not self.client.is_connected():
            self.skipped_offline += len(batch)
            log.info("broker unreachable: %d document(s) will be sent on reconnect", len(batch))
            return
        newest = self._newest
        fresh = []
        for doc in batch:
            if newest.get(doc.device_id, 0) >= doc.sequence:
                continue
            newest[doc.device_id] = doc.sequence
            fresh.append(doc)
        if self._packets is not None:
            sent = self._packets.send(fresh)
            if sent < len(fresh):
                self.skipped_offline += len(fresh) - sent
                log.info("broker lost: %d document(s) will be sent on reconnect", len(fresh) - sent)
            return
        publish = self.client.publish
        for doc in fresh:
            publish(device_topic(doc.device_id, "desired"), doc.envelope, qos=1, retain=True)

    def _send_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        if not self.client.is_connected():
            return
        for device_id in device_ids:
            self.client.publish(device_topic(device_id, "trust-root"), message, qos=1, retain=True)

    def _forget(self, device_id: str) -> None:
        self._newest.pop(device_id, None)
        if self.client.is_connected():
            for channel in ("desired", "trust-root"):
                self.client.publish(device_topic(device_id, channel), b"", qos=1, retain=True)

    def _send_current(self, current: Callable[[], Sequence[Outgoing]]) -> int:
        publish = self.client.publish
        docs = current()
        for doc in docs:
            if self._newest.get(doc.device_id, 0) < doc.sequence:
                self._newest[doc.device_id] = doc.sequence
            publish(device_topic(doc.device_id, "desired"), doc.envelope, qos=1, retain=True)
        return len(docs)
