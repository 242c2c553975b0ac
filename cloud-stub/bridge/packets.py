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

__all__ = ["CHUNK_BYTES", "READ_BURST", "RetainedPackets", "publish_packet", "read_in_bursts"]

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

    def send(self, documents: Sequence[Outgoing]) -> int:
        """Queue the documents (the caller checked the newest sequences); how many were queued.

        Stops when the connection is lost (each chunk checks it): paho clears its queue when
        it reconnects, and the republish on connect sends every newest document anyway.
        """
        client = self.client
        mid = client._mid_generate
        root = f"{TOPIC_ROOT}/".encode()
        parts: list[bytes] = []
        size = queued = 0
        last = 0
        for index, doc in enumerate(documents):
            last = mid()
            packet = publish_packet(root + doc.device_id.encode() + b"/desired", doc.envelope, last)
            parts.append(packet)
            size += len(packet)
            if size >= CHUNK_BYTES or index == len(documents) - 1:
                if client._sock is None or not client.is_connected():
                    break
                client._packet_queue(_PUBLISH_QOS1_RETAIN, b"".join(parts), last, 1)
                queued += len(parts)
                parts, size = [], 0
        return queued


READ_BURST = 1000  # packets paho's network thread reads per wake-up at most


def read_in_bursts(client: paho.Client) -> bool:
    """Make paho's network thread read up to :data:`READ_BURST` packets per wake-up instead of one.

    paho's ``loop_read`` reads as many packets as it has messages booked in flight, at least
    one; with the documents queued as packets (nothing booked) every PUBACK and every
    device report cost a whole ``select()`` round of its loop. The same loop, with a larger
    count: it still stops at the first read that would block. False (nothing changed)
    when the client lacks the internals it relies on.
    """
    needed = ("_sock", "_packet_read", "_loop_rc_handle", "_out_messages", "_in_messages")
    if not all(hasattr(client, name) for name in needed):
        return False

    def loop_read(max_packets: int = 1) -> paho.MQTTErrorCode:
        count = max(READ_BURST, max_packets, len(client._out_messages) + len(client._in_messages))
        for _ in range(count):
            if client._sock is None:
                return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = client._packet_read()
            if rc > 0:
                return client._loop_rc_handle(rc)
            if rc == paho.MQTTErrorCode.MQTT_ERR_AGAIN:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    client.loop_read = loop_read  # type: ignore[method-assign]
    return True
