"""``RetainedPackets``: documents as pre-encoded MQTT 3.1.1 PUBLISH packets (QoS 1, retained) on paho's own queue.

Why: paho's ``publish()`` builds a message object, books it for retransmission and
wakes its network thread for every message; with its receive path that is 50-60 µs
of the hub's CPU per document, about 0.6 CPU-s for 10,000 (``benchmarks/fleet``).
The hub needs none of that bookkeeping for documents: the store is the queue, and on
every (re)connect the bridge sends every device's newest document again. So the
documents of a batch are encoded here (a few µs each) and appended, a few hundred
KB at a time, to the output queue of the same paho connection, in order with
everything else the publisher sends (ADR 0015 allows the hub one connection).

What it relies on: paho 2.x's ``_packet_queue``, ``_mid_generate`` and ``_out_packet``
(checked by :meth:`RetainedPackets.for_client`; without them, or on MQTT 5, whose
receive maximum paho's queue would have to respect, the publisher calls ``publish()``).
paho ignores a PUBACK whose packet id it did not book, and drops its output queue on
reconnect, which the republish on connect covers.
"""

from __future__ import annotations

from collections.abc import Sequence

import paho.mqtt.client as paho

from edgeship.hub.services import Outgoing
from edgeship.mqtt import TOPIC_ROOT

__all__ = ["CHUNK_BYTES", "RetainedPackets", "publish_packet"]

CHUNK_BYTES = 256 * 1024  # packets joined into one entry of paho's output queue
_PUBLISH_QOS1_RETAIN = 0x33  # PUBLISH, QoS 1, retain, no DUP


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """One MQTT 3.1.1 PUBLISH packet, QoS 1, retained."""
    head = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big")
    return bytes([_PUBLISH_QOS1_RETAIN]) + _remaining_length(len(head) + len(payload)) + head + payload


class RetainedPackets:
    """Writes documents to ``edgeship/v1/devices/{id}/desired`` through ``client``'s output queue."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client

    @classmethod
    def for_client(cls, client: paho.Client) -> RetainedPackets | None:
        """The fast path for an MQTT 3.1.1 paho client that has the internals it needs, else None."""
        needed = ("_packet_queue", "_mid_generate", "_out_packet", "_protocol")
        if not all(hasattr(client, name) for name in needed) or client._protocol != paho.MQTTv311:
            return None
        return cls(client)

    def send(self, documents: Sequence[Outgoing]) -> None:
        """Queue every document (the caller checked the connection and the newest sequences)."""
        mid = self.client._mid_generate
        queue = self.client._packet_queue
        root = f"{TOPIC_ROOT}/".encode()
        parts: list[bytes] = []
        size = 0
        last = 0
        for doc in documents:
            last = mid()
            packet = publish_packet(root + doc.device_id.encode() + b"/desired", doc.envelope, last)
            parts.append(packet)
            size += len(packet)
            if size >= CHUNK_BYTES:
                queue(_PUBLISH_QOS1_RETAIN, b"".join(parts), last, 1)
                parts, size = [], 0
        if parts:
            queue(_PUBLISH_QOS1_RETAIN, b"".join(parts), last, 1)
