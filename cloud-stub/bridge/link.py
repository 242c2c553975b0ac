"""``MqttBridge``: one paho connection joining the hub's service to the broker.

It owns the client and wires its three parts: the :class:`DocumentPublisher`
(``HubService``'s publish callback), the :class:`Subscriber` (inbound device
messages) and the :class:`MethodInvoker` (direct methods). It makes no decisions:
what to publish and what a message means is the service's business.

Build order, because the service needs the publisher and the subscriber needs the service::

    bridge = MqttBridge(parse_broker_url("mqtt://127.0.0.1:1883"))
    service = HubService(store, blobs, trust_root, signers, publish=bridge.publish)
    bridge.start(service)   # connects, subscribes, re-publishes every device's newest document
    ...
    bridge.stop()
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import paho.mqtt.client as paho

from edgeship.errors import TransportError
from edgeship.hub.bridge.limits import InboundLimits
from edgeship.hub.bridge.methods import MethodInvoker
from edgeship.hub.bridge.publisher import DocumentPublisher
from edgeship.hub.bridge.subscriber import Subscriber, subscriptions
from edgeship.hub.service import HubService, Outgoing
from edgeship.mqtt import BrokerSettings, parse_device_topic
from edgeship.mqtt.client import connect_properties, make_client, reason_text

__all__ = ["CONNECT_TIMEOUT", "MAX_INFLIGHT", "MqttBridge"]

MAX_INFLIGHT = 1000  # unacknowledged QoS 1 publishes at once (DESIGN.md: batch, never wait per message)
CONNECT_TIMEOUT = 10.0  # seconds start() waits for the first CONNACK

log = logging.getLogger("edgeship.hub.bridge")


class MqttBridge:
    def __init__(self, settings: BrokerSettings, *, client_id: str | None = None, group: str = "hub",
                 limits: InboundLimits | None = None) -> None:
        """``client_id`` given: a persistent session (messages queued for the hub survive its restart).

        ``limits``: what devices may send (sizes, rates, the inbound byte budget; ``limits.py``).

        Without one the client id is the broker username (``hub``, ``hub-<name>``: what the
        generated Mosquitto config makes it anyway, ADR 0015), or a random
        ``edgeship-hub-<hex>`` without a login (the embedded broker), with a clean session;
        the retained ``reported`` and ``online`` messages still arrive on every subscribe.
        Each hub process needs its own broker user: two under one would take turns.
        """
        self.settings = settings
        self.group = group
        self.client_id = client_id or settings.username or f"edgeship-hub-{secrets.token_hex(4)}"
        self._persistent = client_id is not None
        self.client = make_client(settings, self.client_id, persistent=self._persistent,
                                  max_inflight=MAX_INFLIGHT, max_queued=0)
        self.publisher = DocumentPublisher(self.client)
        self.methods = MethodInvoker(self.client)
        self.subscriber: Subscriber | None = None
        self.limits = limits
        self.connections = 0  # successful CONNACKs so far (a reconnect increments it)
        self.republished = 0  # documents sent by the last republish
        self._connected = threading.Event()
        self._republished = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def url(self) -> str:
        return self.settings.url

    def publish(self, batch: Sequence[Outgoing]) -> None:
        """``HubService``'s publish callback (works before :meth:`start`: nothing is sent until connected)."""
        self.publisher.publish(batch)

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        return self.methods.invoke(device_id, method, args, timeout)

    def start(self, service: HubService, *, timeout: float = CONNECT_TIMEOUT) -> MqttBridge:
        """Connect and wait for the first subscribe and republish; a broker that stays away is a TransportError."""
        self.subscriber = Subscriber(service, self.limits)
        self.subscriber.start()
        service.method_caller = self.invoke
        service.publish_trust_root = self.publisher.publish_trust_root
        service.forget_device = self.publisher.forget
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive,
                                  properties=connect_properties(self.settings, self._persistent))
        self.client.loop_start()
        if not self._republished.wait(timeout):
            self.stop()
            raise TransportError(
                f"The hub could not connect to the MQTT broker at {self.settings.url} within {timeout:g} s; "
                "start the broker (or use --embedded-broker) and check the address and credentials."
            )
        return self

    def wait_republished(self, timeout: float) -> bool:
        """After a reconnect: wait until the newest documents went out again (tests and ``serve`` logs)."""
        return self._republished.wait(timeout)

    def stop(self) -> None:
        if self.subscriber is not None:
            self.subscriber.service.method_caller = None
            self.subscriber.service.publish_trust_root = None
            self.subscriber.service.forget_device = None
        self.client.disconnect()
        self.client.loop_stop()
        if self.subscriber is not None:
            self.subscriber.stop()

    # paho callbacks (network thread): no I/O beyond paho's own -------------------------------------
    def _on_connect(self, client: paho.Client, _userdata: object, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", bool(reason)):
            log.error("MQTT broker %s refused the hub: %s", self.settings.url, reason_text(reason))
            return
        self.connections += 1
        self._connected.set()
        self._republished.clear()
        client.subscribe([(topic, qos) for topic, qos in subscriptions(self.settings.protocol, self.group)])
        subscriber = self.subscriber
        if subscriber is not None and not subscriber.submit(self._republish):
            log.error("the hub's inbound queue is full; the newest documents were not re-published")
        log.info("connected to MQTT broker %s as %s", self.settings.url, self.client_id)

    def _republish(self) -> None:
        subscriber = self.subscriber
        if subscriber is None:
            return
        service = subscriber.service
        message = service.trust_root_message()  # before the documents a rotated hub key signed
        if message is not None:
            self.publisher.publish_trust_root(message, [d.id for d in service.store.list_devices()])
        self.republished = self.publisher.republish(service.current_documents)
        self._republished.set()
        log.info("re-published the newest document of %d device(s)", self.republished)

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        if getattr(reason, "is_failure", bool(reason)):
            log.warning("lost the MQTT broker %s (%s); reconnecting", self.settings.url, reason_text(reason))

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        topic = parse_device_topic(message.topic)
        if topic is None:
            if self.subscriber is not None:  # counted and summarised: a device must not flood the log
                self.subscriber.drop_foreign(message.topic)
            return
        payload = bytes(message.payload)
        if topic.channel == "responses":
            self.methods.on_response(topic, payload)
        elif self.subscriber is not None and topic.channel in ("reported", "telemetry", "online"):
            self.subscriber.on_message(topic, payload)
