"""Send queued telemetry in order, and keep each batch until it is known to be stored (ADR 0049).

One batch is in flight at a time, so batches arrive in order. What removes it from the
on-disk queue depends on the hub:

- **a hub that confirms** (it has sent a ``telemetry-stored`` message, ``confirm.py``):
  the batch stays until the hub says it stored it. A broker's PUBACK only means the
  broker took the message, and a NATS cluster acknowledges a publish before its stream
  stores it (it lost acknowledged messages while a stream elected a leader), as
  Mosquitto does before it saves. The batch is published again ``resend_after`` seconds
  after the broker took it, then after twice that, up to ``RESEND_MAX``; the hub stores
  each sample once, so a copy costs only the message;
- **a hub that does not** (older than this contract, or silent for ``give_up_after``
  seconds although the broker took the batch: a long hub outage): the broker's PUBACK
  removes it, as before. The next confirmation turns waiting for the hub back on.

Which of the two holds is kept in the queue's folder, so a restarted agent goes on as
it was. :meth:`TelemetrySender.pump` never blocks; the agent calls it every 0.2 s while
connected.

``schema_version`` 1 sends what a hub older than telemetry version 2 accepts: the same
samples without ``version``, ``serverErrors`` and ``clientErrors`` (ADR 0024).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from edgeship.agent.telemetry.confirm import StoredConfirmations
from edgeship.agent.telemetry.queue import Batch, TelemetryQueue

__all__ = [
    "BATCH_SIZE", "GIVE_UP_AFTER", "RESEND_AFTER", "RESEND_MAX", "SCHEMA_VERSIONS", "TELEMETRY_SCHEMA_VERSION",
    "TelemetrySender",
]  # fmt: skip

TELEMETRY_SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
_V2_MODULE_KEYS = ("version", "serverErrors", "clientErrors")  # what a version 1 batch must not carry
BATCH_SIZE = 100  # samples per published batch
RESEND_AFTER = 30.0  # seconds after the broker took a batch before it is sent again unconfirmed
RESEND_MAX = 480.0  # the longest wait between two copies of one batch
GIVE_UP_AFTER = 900.0  # seconds without a confirmation (the broker took it) before PUBACKs count again
log = logging.getLogger("edgeship.agent")


class Publisher(Protocol):
    def publish_telemetry(self, batch: dict[str, Any]) -> Any: ...


class _InFlight:
    """The batch in flight (a plain class: the agent does not import ``dataclasses``, ADR 0043)."""

    __slots__ = ("batch", "delay", "first_sent", "info", "next_copy")

    def __init__(self, batch: Batch, info: Any, first_sent: float, next_copy: float, delay: float) -> None:
        self.batch = batch
        self.info = info  # paho's MQTTMessageInfo of the newest copy
        self.first_sent = first_sent
        self.next_copy = next_copy
        self.delay = delay


class TelemetrySender:
    """Publishes queued samples in order; a batch leaves the queue once delivered (see the module's text)."""

    def __init__(self, device_id: str, queue: TelemetryQueue, link: Publisher, confirmations: StoredConfirmations,
                 schema_version: int = TELEMETRY_SCHEMA_VERSION, *, resend_after: float = RESEND_AFTER,
                 give_up_after: float = GIVE_UP_AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        if schema_version not in SCHEMA_VERSIONS:
            raise ValueError(f"telemetry schema version {schema_version} is not one of {SCHEMA_VERSIONS}")
        if not 0 < resend_after <= give_up_after:
            raise ValueError(f"resend_after ({resend_after}) must be above 0 and at most give_up_after "
                             f"({give_up_after})")
        self.device_id = device_id
        self.queue = queue
        self.link = link
        self.confirmations = confirmations
        self.schema_version = schema_version
        self.resend_after = resend_after
        self.give_up_after = give_up_after
        self.clock = clock
        self.copies = 0  # batches published again for want of a confirmation
        self._inflight: _InFlight | None = None
        self._silent_since = 0  # confirmations counted when the hub was last given up on

    def pump(self) -> int:
        """Remove a delivered batch and publish the next (or a copy of one unconfirmed); returns samples removed."""
        removed = 0
        flight = self._inflight
        if flight is not None:
            if not self._delivered(flight):
                return 0
            self.queue.ack(flight.batch)
            self._inflight = None
            removed = len(flight.batch.samples)
        pending = self.queue.peek(BATCH_SIZE)
        if pending is None:
            return removed
        info = self._publish(pending)
        if info is not None:
            now = self.clock()
            self._inflight = _InFlight(pending, info, now, now + self.resend_after, self.resend_after)
        return removed

    def _delivered(self, flight: _InFlight) -> bool:
        last = flight.batch.last_seq
        if self.confirmations.count > self._silent_since and not self.queue.hub_confirms:
            self.queue.set_hub_confirms(True)
            log.info("the hub confirms the telemetry it stores; batches now wait for its confirmation")
        if self.confirmations.seq >= last:
            refused = self.confirmations.refusal(last)
            if refused is not None:
                log.warning("the hub refused telemetry samples %d-%d: %s; they are dropped",
                            flight.batch.samples[0].get("seq", last), last, refused)  # fmt: skip
            return True
        if not flight.info.is_published():
            return False  # paho sends it again after a reconnect (persistent session)
        if not self.queue.hub_confirms:
            return True
        now = self.clock()
        if now - flight.first_sent >= self.give_up_after:
            self._silent_since = self.confirmations.count
            self.queue.set_hub_confirms(False)
            log.warning("the hub has not confirmed telemetry samples up to %d for %.0f s although the broker took "
                        "them; counting the broker's acknowledgement until the hub confirms again",
                        last, now - flight.first_sent)
            return True
        if now >= flight.next_copy:
            info = self._publish(flight.batch)
            if info is not None:
                self.copies += 1
                flight.info = info
                flight.delay = min(flight.delay * 2, RESEND_MAX)
                flight.next_copy = now + flight.delay
        return False

    def _publish(self, batch: Batch) -> Any:
        samples = batch.samples if self.schema_version >= 2 else [_as_v1(s) for s in batch.samples]
        message = {
            "schemaVersion": self.schema_version,
            "deviceId": self.device_id,
            "samples": samples,
            "dropped": batch.dropped,
        }
        return self.link.publish_telemetry(message)


def _as_v1(sample: dict[str, Any]) -> dict[str, Any]:
    modules = sample.get("modules")
    if not isinstance(modules, dict):
        return sample
    return {**sample, "modules": {
        name: {k: v for k, v in entry.items() if k not in _V2_MODULE_KEYS} if isinstance(entry, dict) else entry
        for name, entry in modules.items()
    }}
