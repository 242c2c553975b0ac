"""``NatsInbound``: devices' ``reported``/``telemetry``/``online`` from a NATS cluster's JetStream, shared by replicas.

On a NATS cluster the hub speaks MQTT 3.1.1, which has no shared subscriptions, so over
MQTT every replica would receive and store every device message. NATS maps the MQTT topic
``edgeship/v1/devices/dev.1/reported`` to the subject ``edgeship.v1.devices.dev//1.reported``
(``/`` -> ``.``, ``.`` -> ``//``, :func:`~edgeship.hub.broker.nats.nats_subject`), so a
JetStream stream over those subjects (:data:`~edgeship.hub.broker.nats.INBOUND_STREAM`)
holds every device message, live ones only (retained copies are not published again), and
all replicas fetch from its one durable pull consumer: each message goes to one replica.

Each replica (ADR 0047):

- creates the stream and the consumer if they are missing (idempotent; work-queue retention,
  so a message is gone once acknowledged; replicated as the MQTT streams are, R3);
- fetches batches on an asyncio loop in its own thread, never more than fits in the
  :class:`~edgeship.hub.bridge.limits.InboundGate`'s free byte budget if every message were as
  large as a channel allows, and never more than :data:`IN_FLIGHT` unacknowledged messages;
- hands each message to the same :class:`~edgeship.hub.bridge.subscriber.Subscriber` the MQTT
  bridge uses (sizes, per-device rates, schema checks, batched report stores, drop counts and
  their messages), which acknowledges it after the store committed (or it was dropped);
- a replica killed mid-batch acknowledged nothing of it: the server gives those messages to
  another replica after :data:`ACK_WAIT` seconds; the stores are idempotent, so one stored twice
  is stored once.

The fetching is paced by the database, not by the devices: while the worker is busy the
messages wait in the stream (bounded by :data:`MAX_AGE` and :data:`MAX_BYTES`), not in the hub.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.errors import TransportError
from edgeship.hub.bridge.subscriber import BATCH, INBOUND_CHANNELS, Subscriber
from edgeship.hub.broker.nats import INBOUND_CONSUMER, INBOUND_STREAM, nats_subject
from edgeship.mqtt import TOPIC_ROOT, DeviceTopic, parse_device_topic

__all__ = ["ACK_WAIT", "IN_FLIGHT", "MAX_AGE", "MAX_BYTES", "NatsInbound", "StreamSettings", "device_topic_of"]

# Seconds before a message fetched and not acknowledged goes to another replica: what a killed replica's messages
# wait. IN_FLIGHT messages (the worker's telemetry batches in one transaction, ADR 0052) are stored well within it;
# one that is not is stored twice, once (ADR 0047).
ACK_WAIT = 15.0
IN_FLIGHT = BATCH  # messages fetched and not yet acknowledged, per replica
MAX_AGE = 24 * 3600.0  # seconds a message waits in the stream for a replica (the hub's MQTT session expiry)
MAX_BYTES = 1024 * 1024 * 1024  # bytes the stream holds while no replica fetches; the oldest go first
FETCH_WAIT = 1.0  # seconds one fetch waits for messages
FAILING_WARN = 5.0  # seconds of failed fetches before a warning (a node's loss moves the consumer's leader)
CONNECT_TIMEOUT = 10.0

log = logging.getLogger("edgeship.hub.bridge")


@dataclass(frozen=True)
class StreamSettings:
    """The shared inbound stream and its consumer; the names are the ones the NATS users' permissions name."""

    stream: str = INBOUND_STREAM
    consumer: str = INBOUND_CONSUMER
    replicas: int = 3  # as the MQTT streams of the generated node configs (NatsSettings.stream_replicas)
    ack_wait: float = ACK_WAIT
    max_age: float = MAX_AGE
    max_bytes: int = MAX_BYTES


def stream_subjects() -> list[str]:
    """The subjects the devices' inbound MQTT topics map to: ``edgeship.v1.devices.*.reported`` and the others."""
    return [nats_subject(f"{TOPIC_ROOT}/+/{channel}") for channel in INBOUND_CHANNELS]


def device_topic_of(subject: str) -> DeviceTopic | None:
    """The device topic of a NATS subject the stream holds (``//`` back to ``.``), or None for anything else."""
    return parse_device_topic("/".join(level.replace("//", ".") for level in subject.split(".")))


class NatsInbound:
    """One replica's share of the inbound stream: connect, fetch, hand to the subscriber, acknowledge after storing.

    ``on_online`` is called (in this class's thread) for every ``online`` ``"1"``: a device (re)connected, so the
    recovery pass of ADR 0044 is scheduled as the MQTT path schedules it.
    """

    def __init__(self, servers: Sequence[str], subscriber: Subscriber, *, username: str | None,
                 password: str | None, on_online: Callable[[], None] | None = None,
                 settings: StreamSettings | None = None, name: str = "edgeship-hub",
                 ca_file: Path | None = None) -> None:  # fmt: skip
        """``ca_file``: the CA that signed the nodes' certificate (the hub's ``--broker-ca``), for a node that
        requires TLS (``tls://`` or a ``nats://`` node that asks for it; ADR 0048); None: the system's CAs."""
        self.servers = list(servers)
        self.ca_file = ca_file
        self.subscriber = subscriber
        self.username, self.password = username, password
        self.on_online = on_online
        self.settings = settings or StreamSettings()
        self.name = name
        self.fetched = 0  # messages fetched since start (redeliveries included)
        self.acknowledged = 0  # of those, stored or dropped and acknowledged
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._last_error: Exception | None = None  # what the connection last reported (error_cb)
        self._stopping: asyncio.Event | None = None
        self._in_flight = 0  # touched on the loop's thread only
        self._task: concurrent.futures.Future[None] | None = None

    def start(self, timeout: float = CONNECT_TIMEOUT) -> NatsInbound:
        """Connect, make sure the stream and the consumer exist, start fetching; a TransportError if that fails."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="edgeship-hub-nats-inbound", daemon=True)
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._run(timeout), self._loop)
        if not self._ready.wait(timeout + 5) or self._failure is not None:
            failure = self._failure
            self.stop()
            if isinstance(failure, TransportError):
                raise failure
            raise TransportError(
                f"The hub could not open the shared inbound stream on NATS at {', '.join(self.servers)} within "
                f"{timeout:g} s ({failure or 'no answer'}); check the address, the hub's broker user and that its "
                "users.conf was written by this version of 'edgeship hub broker-config --engine nats'."
            )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        with contextlib.suppress(Exception):
            if self._task is not None:
                self._task.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None
        log.info("took %d device message(s) from NATS stream %s (%d fetched, redeliveries included); this hub "
                 "stored %d in all (with the recovery pass's re-read reports)", self.acknowledged,
                 self.settings.stream, self.fetched, self.subscriber.handled)
        if not self._loop.is_running():
            self._loop.close()

    async def _run(self, timeout: float) -> None:
        import nats
        from nats.errors import Error as NatsError

        self._stopping = asyncio.Event()
        try:
            tls = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file is not None else None
        except (OSError, ssl.SSLError) as exc:
            self._failure = TransportError(f"The hub cannot use {self.ca_file} as the CA of the NATS nodes ({exc}); "
                                           "give --broker-ca a PEM file of the CA that signed their certificate.")
            self._ready.set()
            return
        try:  # nats-py retries a first connect as often as a reconnect (for ever): bounded here
            connection = await asyncio.wait_for(nats.connect(
                self.servers, user=self.username, password=self.password, name=self.name, tls=tls,
                connect_timeout=min(timeout, 2.0), max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                allow_reconnect=True, error_cb=self._on_error,
            ), timeout)  # fmt: skip
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            why = str(self._last_error or exc) or type(exc).__name__
            self._failure = TransportError(
                f"The hub could not log in to NATS at {', '.join(self.servers)} as {self.username!r} ({why}); check "
                "the address (nats://host:4222, a node's client port), the hub's broker user and password, and that "
                "users.conf lets hubs in there (write it again with 'edgeship hub broker-config --engine nats')"
                + (", and that --broker-ca names the CA that signed the nodes' certificate." if self._tls_wanted()
                   else ".")
            )
            self._ready.set()
            return
        try:
            subscription = await self._open(connection)
        except Exception as exc:  # any refusal of the JetStream API: the start fails with its reason
            self._failure = exc
            self._ready.set()
            await connection.close()
            return
        self._ready.set()
        log.info("fetching device messages from NATS stream %s (consumer %s, shared with the other replicas)",
                 self.settings.stream, self.settings.consumer)
        try:
            await self._fetch_loop(subscription)
            for _ in range(100):  # what was fetched is stored and acknowledged before the connection goes (<= 5 s)
                if self._in_flight <= 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    def _tls_wanted(self) -> bool:
        return self.ca_file is not None or any(url.startswith("tls://") for url in self.servers) or isinstance(
            self._last_error, ssl.SSLError)

    async def _open(self, connection: Any) -> Any:
        """The stream and its durable consumer, created when missing (two replicas racing both succeed)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StreamConfig
        from nats.js.errors import NotFoundError

        s = self.settings
        js = connection.jetstream(timeout=10.0)
        try:
            await js.stream_info(s.stream)
        except NotFoundError:
            config = StreamConfig(name=s.stream, subjects=stream_subjects(), retention=RetentionPolicy.WORK_QUEUE,
                                  num_replicas=s.replicas, max_age=s.max_age, max_bytes=s.max_bytes,
                                  discard=DiscardPolicy.OLD)  # fmt: skip
            with contextlib.suppress(Exception):  # another replica may have created it in between: looked up below
                await js.add_stream(config)
            await js.stream_info(s.stream)
            log.info("NATS stream %s was missing: made it over %s (R%d; or another replica did at the same time)",
                     s.stream, ", ".join(stream_subjects()), s.replicas)
        consumer = ConsumerConfig(durable_name=s.consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=s.ack_wait,
                                  deliver_policy=DeliverPolicy.ALL, max_ack_pending=-1, max_deliver=-1)  # fmt: skip
        return await js.pull_subscribe("", durable=s.consumer, stream=s.stream, config=consumer)

    async def _fetch_loop(self, subscription: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        assert self._stopping is not None
        failing_since: float | None = None  # a new R3 consumer answers "unavailable" for a moment: not worth a warning
        while not self._stopping.is_set():
            room = self._room()
            if room <= 0:
                await asyncio.sleep(0.05)
                continue
            try:
                messages = await subscription.fetch(room, timeout=FETCH_WAIT)
            except (NatsTimeout, asyncio.TimeoutError):
                continue
            except Exception as exc:  # the connection or the consumer's leader is away (both come back): retry
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since >= FAILING_WARN:
                    log.warning("fetching from NATS stream %s has failed for %.0f s (%s); retrying",
                                self.settings.stream, now - failing_since, exc)
                    failing_since = now
                await asyncio.sleep(0.2)
                continue
            failing_since = None
            for message in messages:
                self._deliver(message)

    def _room(self) -> int:
        """Messages that may be fetched now: within IN_FLIGHT and the gate's free bytes at the largest size."""
        gate, limits = self.subscriber.gate, self.subscriber.limits
        largest = max(limits.channel(c).max_bytes for c in INBOUND_CHANNELS) + limits.message_overhead
        free = (limits.queue_bytes - gate.queued_bytes) // largest
        return max(0, min(BATCH, IN_FLIGHT - self._in_flight, free))

    def _deliver(self, message: Any) -> None:
        self.fetched += 1
        topic = device_topic_of(message.subject)
        if topic is None or topic.channel not in INBOUND_CHANNELS:
            self.subscriber.drop_foreign(message.subject)
            self._loop.create_task(self._ack(message, counted=False))
            return
        payload = bytes(message.data)
        if topic.channel == "online" and payload == b"1" and self.on_online is not None:
            self.on_online()  # every message of the stream is a live publish: a device (re)connected
        self._in_flight += 1
        self.subscriber.on_message(topic, payload, lambda: self._ack_soon(message))

    def _ack_soon(self, message: Any) -> None:
        """The subscriber's worker stored (or dropped) the message: acknowledge it on the loop's thread."""
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped: the server gives the message to another
                self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._ack(message)))

    async def _ack(self, message: Any, counted: bool = True) -> None:
        if counted:
            self._in_flight -= 1
        try:
            await message.ack()
            self.acknowledged += 1
        except Exception as exc:  # not acknowledged: sent again after ack_wait, stored again (idempotent)
            log.debug("could not acknowledge a NATS message (%s); it will be redelivered", exc)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        log.warning("NATS connection of the shared inbound stream: %s", exc)
