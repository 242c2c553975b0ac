"""How much inbound work one device, and all devices together, may give the hub: decisions only.

:class:`InboundGate` decides, in paho's network thread and before anything is queued,
whether a device message may enter the hub's inbound queue, in this order:

1. **size**: a payload over its channel's ``max_bytes`` is dropped (``too-large``);
2. **rate**: each device has token buckets per channel, one of messages (``rate``
   per second, ``burst`` at once) and one of payload bytes (``byte_rate``,
   ``byte_burst``); a message either bucket cannot pay for is dropped (``rate``,
   ``byte-rate``). Bytes matter because storing a telemetry batch costs the hub
   time in proportion to the device's kept telemetry (``TelemetryStore.add_many``
   compares it with the kept samples whose batch's seq range overlaps its own: every
   one, for a batch spanning every seq), not just per message;
3. **device share**: one device's messages waiting for the worker may hold at most
   ``device_queue_bytes`` (``device-share``), so one device never takes the budget;
4. **budget**: all messages admitted and not yet handled hold at most
   ``queue_bytes`` (``queue-full``).

Each admitted message is charged its payload plus :attr:`InboundLimits.message_overhead`
bytes (the Python objects around it) until the worker calls :meth:`InboundGate.release`.
Invariant: the bytes charged never exceed ``queue_bytes``, so the memory the hub's
inbound work holds is bounded whatever devices send (ADR 0016).

:class:`DropCounter` counts what was dropped, per device, channel and reason, and
turns an interval's drops into one log line; nothing here logs or reads a clock
itself (the clock is injected, so tests step it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "REASONS",
    "ChannelLimit",
    "DropCounter",
    "InboundGate",
    "InboundLimits",
    "InboundStats",
]

KiB = 1024
MiB = 1024 * KiB

REASONS: dict[str, str] = {
    "too-large": "over the channel's size limit (docs/mqtt.md); the device must send smaller messages",
    "rate": "over the device's message rate for the channel (docs/mqtt.md); the device is misbehaving",
    "byte-rate": "over the device's byte rate for the channel (docs/mqtt.md); the device sends too much",
    "device-share": "the device already had its share of the hub's inbound queue waiting; it sends too fast",
    "queue-full": "the hub's inbound queue was at its byte budget; the hub is flooded or its database is slow",
    "malformed": "not a valid message for the channel",
    "schema": "refused by the channel's schema (docs/mqtt.md)",
    "unknown-device": "no such device on the hub (create it with 'edgeship device create')",
    "refused": "refused by the hub",
}
"""Every reason a device message is dropped for, and what it means."""

MAX_TRACKED_DEVICES = 100_000  # devices with their own drop counts; drops of any further device count as "(other)"
SUMMARY_DEVICES = 10  # devices named in one summary line (the ones with most drops)


@dataclass(frozen=True)
class ChannelLimit:
    """What one device may send on one channel."""

    max_bytes: int  # bytes of one payload; a larger one is dropped before it is queued
    rate: float  # messages per second, sustained (math.inf: no rate limit)
    burst: int  # messages at once above the rate (the bucket's size)
    byte_rate: float = math.inf  # payload bytes per second, sustained (math.inf: no byte limit)
    byte_burst: int = 0  # payload bytes at once above the byte rate


@dataclass(frozen=True)
class InboundLimits:
    """The hub's inbound limits (``HubConfig.inbound``); the defaults and their sizing are in ADR 0016.

    A burst of 10,000 devices' retained reports (about 0.5-2 KB each) and ``online``
    flags when the hub subscribes is about 10,000 x (2 KB + 2 x 256 B) = 25 MB at most:
    under the 64 MiB budget with the worker draining it at the same time.
    """

    queue_bytes: int = 64 * MiB  # bytes of device messages admitted and not yet handled, all devices together
    device_queue_bytes: int = 4 * MiB  # of those, bytes one device's messages may hold (16 full telemetry batches)
    message_overhead: int = 256  # bytes charged per message on top of its payload (topic, tuple, bytes object)
    # The agent reports on a change (an install sends a few), so 10 at once and one per 2 s sustained.
    reported: ChannelLimit = ChannelLimit(max_bytes=128 * KiB, rate=0.5, burst=10)
    # The agent sends one batch per 30 s, and drains an offline backlog one batch in flight at a time,
    # at most one per 0.2 s (agent/daemon.py _SEND_POLL): 5 per second never drops its backlog. A sample
    # is about 100 B + 85 B per module, so the agent's default backlog (10,000 samples) of a device with
    # 7 modules (6.8 MB) fits the 8 MiB byte burst; 16 KiB/s sustained is ~100x a sample every 30 s.
    # While only the hub is away the broker acknowledges each sample as its own message and queues
    # it for the hub, which then gets the backlog at once: 1,200 messages at once is a 10-hour
    # outage at the default 30 s interval (ADR 0019). The byte bucket, not this count, bounds memory.
    telemetry: ChannelLimit = ChannelLimit(max_bytes=256 * KiB, rate=5.0, burst=1200, byte_rate=16 * KiB,
                                           byte_burst=8 * MiB)
    # '1' on every connect, '0' from the last will or a clean shutdown.
    online: ChannelLimit = ChannelLimit(max_bytes=16, rate=1.0, burst=10)
    log_interval: float = 60.0  # seconds between summary lines of dropped messages

    def channel(self, name: str) -> ChannelLimit:
        limit = {"reported": self.reported, "telemetry": self.telemetry, "online": self.online}.get(name)
        if limit is None:
            raise ValueError(f"{name!r} is not an inbound channel (reported, telemetry, online)")
        return limit


class InboundGate:
    """Admission of device messages into the inbound queue; thread-safe (paho's thread admits, the worker releases).

    Rate buckets idle long enough to be full again are forgotten by :meth:`prune`, so
    device ids that sent once long ago hold no memory.
    """

    def __init__(self, limits: InboundLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        # (device, channel) -> [message tokens, byte tokens, last refill time]
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._device_bytes: Counter[str] = Counter()
        self.queued_bytes = 0  # charged now
        self.peak_bytes = 0  # highest charge since start: what the tests and the stats show

    def cost(self, size: int) -> int:
        return size + self.limits.message_overhead

    def admit(self, device_id: str, channel: str, size: int) -> str | None:
        """None: admitted, and :meth:`cost` of ``size`` is charged until :meth:`release`; else the drop reason."""
        limit = self.limits.channel(channel)
        if size > limit.max_bytes:
            return "too-large"
        cost = self.cost(size)
        with self._lock:
            refused = self._take_tokens(device_id, channel, limit, size)
            if refused is not None:
                return refused
            if self._device_bytes[device_id] + cost > self.limits.device_queue_bytes:
                return "device-share"
            if self.queued_bytes + cost > self.limits.queue_bytes:
                return "queue-full"
            self._device_bytes[device_id] += cost
            self.queued_bytes += cost
            self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
        return None

    def release(self, device_id: str, size: int) -> None:
        """The worker is done with an admitted message of ``size`` bytes."""
        cost = self.cost(size)
        with self._lock:
            self.queued_bytes -= cost
            left = self._device_bytes[device_id] - cost
            if left > 0:
                self._device_bytes[device_id] = left
            else:
                del self._device_bytes[device_id]

    def prune(self) -> int:
        """Forget rate buckets that are full again (as a new one would be); returns how many were forgotten."""
        now = self.clock()
        with self._lock:
            full = [key for key, (messages, data, last) in self._buckets.items()
                    if _full(messages, data, now - last, self.limits.channel(key[1]))]
            for key in full:
                del self._buckets[key]
        return len(full)

    def _take_tokens(self, device_id: str, channel: str, limit: ChannelLimit, size: int) -> str | None:
        """Pay one message and ``size`` bytes from the device's buckets, or neither; the refusal reason."""
        if math.isinf(limit.rate) and math.isinf(limit.byte_rate):
            return None
        now = self.clock()
        bucket = self._buckets.get((device_id, channel))
        if bucket is None:
            bucket = self._buckets[(device_id, channel)] = [float(limit.burst), float(limit.byte_burst), now]
        elapsed = max(now - bucket[2], 0.0)
        messages = min(float(limit.burst), bucket[0] + elapsed * limit.rate) if math.isfinite(limit.rate) else 1.0
        data = (min(float(limit.byte_burst), bucket[1] + elapsed * limit.byte_rate)
                if math.isfinite(limit.byte_rate) else float(size))
        bucket[0], bucket[1], bucket[2] = messages, data, now
        if messages < 1.0:
            return "rate"
        if data < size:
            return "byte-rate"
        bucket[0], bucket[1] = messages - 1.0, data - size
        return None


def _full(messages: float, data: float, elapsed: float, limit: ChannelLimit) -> bool:
    elapsed = max(elapsed, 0.0)
    return ((not math.isfinite(limit.rate) or messages + elapsed * limit.rate >= limit.burst)
            and (not math.isfinite(limit.byte_rate) or data + elapsed * limit.byte_rate >= limit.byte_burst))


@dataclass(frozen=True)
class InboundStats:
    """What the hub dropped since it started: totals per ``(channel, reason)`` and per device."""

    handled: int
    dropped: int
    by_reason: dict[tuple[str, str], int]
    by_device: dict[str, int]
    queued_bytes: int
    peak_bytes: int


@dataclass
class _Interval:
    started: float
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (device, channel, reason)
    details: dict[tuple[str, str], str] = field(default_factory=dict)  # (channel, reason) -> its first detail


class DropCounter:
    """Counts dropped messages; :meth:`summary` gives at most one line per interval. Thread-safe."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self.total = 0
        self.by_reason: Counter[tuple[str, str]] = Counter()
        self.by_device: Counter[str] = Counter()
        self._now = _Interval(clock())

    def count(self, device_id: str, channel: str, reason: str, detail: str | None = None) -> None:
        with self._lock:
            self.total += 1
            self.by_reason[(channel, reason)] += 1
            tracked = device_id in self.by_device or len(self.by_device) < MAX_TRACKED_DEVICES
            self.by_device[device_id if tracked else "(other)"] += 1
            self._now.counts[(device_id if tracked else "(other)", channel, reason)] += 1
            if detail:
                self._now.details.setdefault((channel, reason), detail)

    def due(self) -> bool:
        return self.clock() - self._now.started >= self.interval

    def summary(self, *, force: bool = False) -> str | None:
        """The line for the interval that just ended (None when nothing was dropped), and a new interval.

        Before the interval is over it returns None unless ``force`` (the worker's last word on stop).
        """
        now = self.clock()
        with self._lock:
            if not force and now - self._now.started < self.interval:
                return None
            ended, self._now = self._now, _Interval(now)
            total = self.total
        return _summary_line(ended, now - ended.started, total)


def _summary_line(interval: _Interval, seconds: float, total: int) -> str | None:
    if not interval.counts:
        return None
    per_device: dict[str, Counter[str]] = {}
    for (device, channel, reason), n in interval.counts.items():
        per_device.setdefault(device, Counter())[f"{channel} {reason}"] += n
    ranked = sorted(per_device.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    dropped = sum(interval.counts.values())
    parts = [
        f"{device!r} {sum(kinds.values())} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})"
        for device, kinds in ranked[:SUMMARY_DEVICES]
    ]
    if len(ranked) > SUMMARY_DEVICES:
        parts.append(f"and {len(ranked) - SUMMARY_DEVICES} more device(s)")
    kinds = sorted({(channel, reason) for _, channel, reason in interval.counts})
    why = "; ".join(f"{c} {r}: {interval.details.get((c, r)) or REASONS.get(r, r)}" for c, r in kinds)
    line = (f"dropped {dropped} inbound device message(s) in the last {seconds:.0f} s ({total} since the hub "
            f"started): {', '.join(parts)}. Why: {why}")
    return " ".join(line.split())  # one line, whatever a detail contained
