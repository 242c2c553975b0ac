"""``DocumentPublisher``: signed documents out, retained, QoS 1, on ``edgeship/v1/devices/{id}/desired``.

The hot path (:meth:`publish`) hands a whole batch to paho without waiting for any
acknowledgement: paho writes from its network thread, and at most ``max_inflight``
messages are unacknowledged at once. Two rules keep the retained document of each
device the newest one:

- a document older than one already published for that device is skipped (two
  request threads may finish re-evaluation out of order);
- while the broker is unreachable nothing is queued in memory: the store is the
  queue. On every (re)connect :meth:`republish` sends the newest document of every
  device again, so a broker that lost its retained messages, or missed documents
  issued while it was down, ends up with the newest state. A lock orders a
  republish against concurrent batches, so a republish can never put back a
  document older than one a request thread just sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho

from edgeship.hub.services import Outgoing
from edgeship.mqtt import device_topic

__all__ = ["DocumentPublisher"]

log = logging.getLogger("edgeship.hub.bridge")


class DocumentPublisher:
    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self._lock = threading.Lock()  # never taken inside a paho callback, so it cannot deadlock with paho's own
        self._newest: dict[str, int] = {}  # device id -> newest sequence handed to paho
        self.skipped_offline = 0  # documents not sent because the broker was down (republished on connect)

    def publish(self, batch: Sequence[Outgoing]) -> None:
        """``DeviceLink.publish``: queue every document of the batch, wait for none."""
        publish = self.client.publish
        newest = self._newest
        with self._lock:
            if not self.client.is_connected():
                self.skipped_offline += len(batch)
                log.info("broker unreachable: %d document(s) will be sent on reconnect", len(batch))
                return
            for doc in batch:
                if newest.get(doc.device_id, 0) >= doc.sequence:
                    continue
                newest[doc.device_id] = doc.sequence
                publish(device_topic(doc.device_id, "desired"), doc.envelope, qos=1, retain=True)

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        """The trust-root chain, retained on each device's ``trust-root`` topic; before any document signed
        under it (same connection, so the broker keeps the order). Offline: sent again on reconnect."""
        with self._lock:
            if not self.client.is_connected():
                return
            for device_id in device_ids:
                self.client.publish(device_topic(device_id, "trust-root"), message, qos=1, retain=True)

    def forget(self, device_id: str) -> None:
        """A deleted device: clear its retained document and trust root, and forget its newest sequence, so a
        device created again under the id (sequences from 1) gets its documents."""
        with self._lock:
            self._newest.pop(device_id, None)
            if self.client.is_connected():
                for channel in ("desired", "trust-root"):
                    self.client.publish(device_topic(device_id, channel), b"", qos=1, retain=True)

    def republish(self, current: Callable[[], Sequence[Outgoing]]) -> int:
        """Send the newest document of every device again; ``current`` reads them under the lock."""
        publish = self.client.publish
        with self._lock:
            docs = current()
            for doc in docs:
                if self._newest.get(doc.device_id, 0) < doc.sequence:
                    self._newest[doc.device_id] = doc.sequence
                publish(device_topic(doc.device_id, "desired"), doc.envelope, qos=1, retain=True)
        return len(docs)
