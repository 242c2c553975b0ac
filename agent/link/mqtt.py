"""The agent's MQTT link: subscribe to its own ``trust-root``, ``desired`` and ``commands/#``, publish the rest.

Thin on purpose: it never decides anything. Incoming messages become
:class:`Inbound` items on a queue that the reconcile loop drains in its own thread
(never in paho's network thread); direct method calls go to ``on_command`` instead
when one is given (the agent's method thread, so they never wait behind a reconcile
pass). The session is persistent (client id = device
id), so QoS 1 commands sent while the device was offline arrive on reconnect; the
last will publishes ``"0"`` retained on ``online`` and every connect publishes
``"1"``. The last reported state is re-published on every connect, so the hub sees
the truth after an outage even if the report was made offline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from edgeship.mqtt.client import Will, connect_properties, make_client, reason_text
from edgeship.mqtt.settings import BrokerSettings
from edgeship.mqtt.topics import device_topic, parse_device_topic, response_topic

__all__ = ["Inbound", "MqttLink"]

log = logging.getLogger("edgeship.agent")


@dataclass(frozen=True)
class Inbound:
    """A message for the loop: a trust-root chain, a desired document, or a direct method call."""

    kind: str  # "trust-root" | "desired" | "command"
    payload: bytes
    method: str | None = None
    request_id: str | None = None


class MqttLink:
    def __init__(
        self,
        settings: BrokerSettings,
        device_id: str,
        inbox: queue.Queue[Inbound],
        on_command: Callable[[str, bytes, str], None] | None = None,
        on_inbound: Callable[[Inbound], None] | None = None,
    ) -> None:
        """``on_command(method, payload, request_id)`` runs in paho's thread: it must only hand the call on.

        ``on_inbound(item)``, when given, queues desired documents and trust roots instead of
        a plain ``inbox.put`` (in paho's thread; the agent also stops a download the item
        supersedes, atomically with the put).
        """
        self.settings = settings
        self.device_id = device_id
        self.inbox = inbox
        self.on_command = on_command
        self.on_inbound = on_inbound
        self.connected = threading.Event()
        self._online = device_topic(device_id, "online")
        self._last_report: bytes | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self.client = make_client(
            settings, device_id, persistent=True, will=Will(self._online, b"0", qos=1, retain=True)
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

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
        commands = device_topic(self.device_id, "commands") + "/#"
        # trust-root first: the broker sends retained messages in subscription order, so a rotated
        # root arrives before a document signed by its new hub key (the agent also retries after it).
        client.subscribe([(device_topic(self.device_id, "trust-root"), 1), (device_topic(self.device_id, "desired"), 1),
                          (commands, 1)])
        client.publish(self._online, b"1", qos=1, retain=True)
        with self._lock:
            report = self._last_report
        if report is not None:
            client.publish(device_topic(self.device_id, "reported"), report, qos=1, retain=True)
        self.connected.set()
        log.info("connected to %s", self.settings.url)

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self.connected.is_set() and not self._stopping:
            log.info("disconnected from %s (%s); reconnecting", self.settings.url, reason_text(reason))
        self.connected.clear()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        topic = parse_device_topic(message.topic)
        if topic is None or topic.device_id != self.device_id:
            return
        if topic.channel in ("desired", "trust-root"):
            item = Inbound(topic.channel, bytes(message.payload))
            if self.on_inbound is not None:
                self.on_inbound(item)
            else:
                self.inbox.put(item)
        elif topic.channel == "commands":
            method, rid = topic.rest
            if self.on_command is not None:
                self.on_command(method, bytes(message.payload), rid)
            else:
                self.inbox.put(Inbound("command", bytes(message.payload), method, rid))

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
