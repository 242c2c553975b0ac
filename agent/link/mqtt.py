"""The agent's MQTT link: subscribe to its own ``trust-root``, ``desired``, ``commands/#`` and ``telemetry-stored``.

Thin on purpose: it never decides anything. Incoming messages become
:class:`Inbound` items on a queue that the reconcile loop drains in its own thread
(never in paho's network thread); direct method calls go to ``on_command`` instead
when one is given (the agent's method thread, so they never wait behind a reconcile
pass), and the hub's ``telemetry-stored`` confirmations to ``on_stored`` (the telemetry
sender's, ``agent/telemetry/confirm.py``). The session is persistent (client id = device
id), so QoS 1 commands sent while the device was offline arrive on reconnect; the
last will publishes ``"0"`` retained on ``online`` and every connect publishes
``"1"``. The last reported state is re-published on every connect, so the hub sees
the truth after an outage even if the report was made offline, and when the same
document arrives again live (the hub's recovery pass re-sends it to devices whose
report it lacks, ADR 0044).

Failover (ADR 0039): given several broker addresses (the nodes of a cluster, which
share sessions and retained messages), the link moves to the next one whenever the
connection drops or a connect fails, with paho's backoff; the session (client id,
``clean_session=False``) resumes on whichever node it reaches. Every SUBACK is
checked: a refused subscription (0x80; a NATS cluster refuses new ones for seconds
after losing a node) is retried with a doubling delay until the broker grants it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho

from edgeship.mqtt.client import RECONNECT_MAX, RECONNECT_MIN, Will, connect_properties, make_client, reason_text
from edgeship.mqtt.settings import BrokerSettings
from edgeship.mqtt.topics import device_topic, parse_device_topic, response_topic
from edgeship.records import record

__all__ = ["Inbound", "MqttLink"]

log = logging.getLogger("edgeship.agent")


@record
class Inbound:
    """A message for the loop: a trust-root chain, a desired document, or a direct method call."""

    kind: str  # "trust-root" | "desired" | "command"
    payload: bytes
    method: str | None = None
    request_id: str | None = None


class MqttLink:
    def __init__(
        self,
        settings: BrokerSettings | Sequence[BrokerSettings],
        device_id: str,
        inbox: queue.Queue[Inbound],
        on_command: Callable[[str, bytes, str], None] | None = None,
        on_inbound: Callable[[Inbound], None] | None = None,
        on_stored: Callable[[bytes], object] | None = None,
        subscribe_qos: int = 1,
    ) -> None:
        """``on_command(method, payload, request_id)`` runs in paho's thread: it must only hand the call on.

        ``on_inbound(item)``, when given, queues desired documents and trust roots instead of
        a plain ``inbox.put`` (in paho's thread; the agent also stops a download the item
        supersedes, atomically with the put).

        ``on_stored(payload)`` takes the hub's ``telemetry-stored`` messages (in paho's thread);
        without it the link does not subscribe to them.

        ``subscribe_qos``: the QoS of the ``trust-root``, ``desired`` and ``commands/#`` subscriptions. 0 on a NATS
        cluster, where each QoS 1 subscription costs a replicated JetStream consumer (ADR 0050): documents are
        retained, so every (re)subscribe brings the newest, and only a command sent while the device is offline
        is lost.

        ``settings``: one broker, or the addresses of a cluster's nodes in the order to try
        them (the first is tried first; all share the login and TLS settings of the first).
        """
        self.addresses = [settings] if isinstance(settings, BrokerSettings) else list(settings)
        if not self.addresses:
            raise ValueError("MqttLink needs at least one broker address")
        self._index = 0
        self.device_id = device_id
        self.inbox = inbox
        self.on_command = on_command
        self.on_inbound = on_inbound
        self.on_stored = on_stored
        if subscribe_qos not in (0, 1):
            raise ValueError(f"subscribe_qos must be 0 or 1, not {subscribe_qos!r}")
        self.subscribe_qos = subscribe_qos
        self.connected = threading.Event()
        self._online = device_topic(device_id, "online")
        self._last_report: bytes | None = None
        self._last_desired: bytes | None = None  # sha256 of the last desired message
        self._stopping = False
        self._lock = threading.Lock()
        self._pending: dict[int, list[tuple[str, int]]] = {}  # SUBSCRIBE message id -> its topics
        self._retry: threading.Timer | None = None  # a refused subscription's next attempt
        self._retry_delay = float(RECONNECT_MIN)
        self.refused_subscriptions = 0  # SUBACK failure codes seen (each retried)
        self.failovers = 0  # moves to another broker address
        self.client = make_client(
            self.settings, device_id, persistent=True, will=Will(self._online, b"0", qos=1, retain=True)
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    @property
    def settings(self) -> BrokerSettings:
        """The broker address in use (or being tried)."""
        return self.addresses[self._index]

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (the broker may be down; paho retries with backoff)."""
        props = connect_properties(self.settings, persistent=True)
        kwargs: dict[str, Any] = {"keepalive": self.settings.keepalive}
        if props is not None:
            kwargs.update(clean_start=False, properties=props)
        self.client.connect_async(self.settings.host, self.settings.port, **kwargs)
        self.client.loop_start()

    def stop(self) -> None:
        """Say "offline" and disconnect cleanly (a clean disconnect does not fire the will)."""
        self._stopping = True
        with self._lock:
            if self._retry is not None:
                self._retry.cancel()
        if self.connected.is_set():
            info = self.client.publish(self._online, b"0", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread: no work here) ---------------------------
    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the connection: %s", reason_text(reason))
            return
        with self._lock:
            self._retry_delay = float(RECONNECT_MIN)
        self._subscribe(client, self._topics())
        client.publish(self._online, b"1", qos=1, retain=True)
        with self._lock:
            report = self._last_report
        if report is not None:
            client.publish(device_topic(self.device_id, "reported"), report, qos=1, retain=True)
        self.connected.set()
        log.info("connected to %s", self.settings.url)

    def _on_disconnect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self._stopping:
            return
        if was_connected:
            log.info("disconnected from %s (%s); reconnecting", self.settings.url, reason_text(reason))
        self._next_address(client)

    def _on_connect_fail(self, client: paho.Client, _userdata: Any) -> None:
        log.info("cannot reach the broker at %s", self.settings.url)
        self._next_address(client)

    def _next_address(self, client: paho.Client) -> None:
        """Point paho's next reconnect at the following address (it waits its backoff first)."""
        if len(self.addresses) < 2:
            return
        self._index = (self._index + 1) % len(self.addresses)
        # paho's host/port setters refuse while a reconnect is pending (its state is not "disconnected" in these
        # callbacks), but its reconnect() reads these two attributes each time (paho-mqtt 2.0-2.2).
        client._host, client._port = self.settings.host, self.settings.port
        self.failovers += 1
        log.info("trying the broker at %s next", self.settings.url)

    # -- subscriptions, checked ------------------------------------------------
    def _topics(self) -> list[tuple[str, int]]:
        # trust-root first: the broker sends retained messages in subscription order, so a rotated
        # root arrives before a document signed by its new hub key (the agent also retries after it).
        qos = self.subscribe_qos
        topics = [(device_topic(self.device_id, "trust-root"), qos), (device_topic(self.device_id, "desired"), qos),
                  (device_topic(self.device_id, "commands") + "/#", qos)]
        if self.on_stored is not None:  # QoS 0 as the hub sends it: on NATS a QoS 1 subscription costs a consumer
            topics.append((device_topic(self.device_id, "telemetry-stored"), 0))
        return topics

    def _subscribe(self, client: paho.Client, topics: list[tuple[str, int]]) -> None:
        with self._lock:  # held across the call: the SUBACK's callback must find the topics
            _rc, mid = client.subscribe(topics)
            if mid is not None:  # None: not connected; the next connect subscribes everything
                self._pending[mid] = topics

    def _on_subscribe(self, client: paho.Client, _userdata: Any, mid: int, codes: Any, _props: Any) -> None:
        with self._lock:
            topics = self._pending.pop(mid, None)
        if topics is None:
            return
        refused = [topic for topic, code in zip(topics, codes, strict=False) if getattr(code, "is_failure", False)]
        if not refused:
            return
        self.refused_subscriptions += len(refused)
        with self._lock:
            delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, RECONNECT_MAX)
            if self._retry is not None:
                self._retry.cancel()
            self._retry = threading.Timer(delay, self._resubscribe, args=(client, refused))
            self._retry.daemon = True
            self._retry.start()
        log.warning("the broker at %s refused %s; retrying in %.0f s", self.settings.url,
                    ", ".join(topic for topic, _ in refused), delay)  # fmt: skip

    def _resubscribe(self, client: paho.Client, topics: list[tuple[str, int]]) -> None:
        if self.connected.is_set() and not self._stopping:
            self._subscribe(client, topics)  # a reconnect in between subscribed everything anyway

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        topic = parse_device_topic(message.topic)
        if topic is None or topic.device_id != self.device_id:
            return
        if topic.channel in ("desired", "trust-root"):
            item = Inbound(topic.channel, bytes(message.payload))
            if topic.channel == "desired":
                self._desired_again(client, item.payload, bool(message.retain))
            if self.on_inbound is not None:
                self.on_inbound(item)
            else:
                self.inbox.put(item)
        elif topic.channel == "telemetry-stored":
            if self.on_stored is not None:
                self.on_stored(bytes(message.payload))
        elif topic.channel == "commands":
            method, rid = topic.rest
            if self.on_command is not None:
                self.on_command(method, bytes(message.payload), rid)
            else:
                self.inbox.put(Inbound("command", bytes(message.payload), method, rid))

    def _desired_again(self, client: paho.Client, payload: bytes, retained: bool) -> None:
        """The same document again, live (not the retained copy a subscribe brings): the hub sends it again because
        it still waits for this device's report of it (ADR 0044), so the last report goes out again."""
        digest = hashlib.sha256(payload).digest()
        with self._lock:
            same, self._last_desired = digest == self._last_desired, digest
            report = self._last_report
        if same and not retained and report is not None:
            client.publish(device_topic(self.device_id, "reported"), report, qos=1, retain=True)

    # -- publishing ------------------------------------------------------------
    def publish_reported(self, report: dict[str, Any]) -> None:
        data = json.dumps(report, sort_keys=True).encode()
        with self._lock:
            self._last_report = data
        if self.connected.is_set():
            self.client.publish(device_topic(self.device_id, "reported"), data, qos=1, retain=True)

    def publish_telemetry(self, batch: dict[str, Any]) -> paho.MQTTMessageInfo | None:
        """Publish one batch (QoS 1); None when offline. Ack it only once ``is_published()``."""
        if not self.connected.is_set():
            return None
        data = json.dumps(batch, separators=(",", ":")).encode()
        return self.client.publish(device_topic(self.device_id, "telemetry"), data, qos=1)

    def respond(self, request_id: str, answer: dict[str, Any]) -> None:
        try:
            topic = response_topic(self.device_id, request_id)
        except ValueError:
            return
        self.client.publish(topic, json.dumps(answer, sort_keys=True).encode(), qos=1)
