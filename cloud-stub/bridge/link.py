"""``MqttBridge``: one paho connection joining the hub's services to the broker.

It owns the client and wires its three parts: the :class:`DocumentPublisher`
(documents and the trust root out), the :class:`Subscriber` (inbound device messages,
handed to the fleet service) and the :class:`MethodInvoker` (direct methods). Outbound it
is the services' :class:`~edgeship.hub.services.DeviceLink`, passed to them at
construction. It makes no decisions: what to publish and what a message means is the
services' business.

Delivery (ADR 0019): the hub's session is persistent whenever it has a stable client id
(its broker username, or ``client_id``), so the broker queues device messages while the
hub is away; and the hub acknowledges a device message (PUBACK) only after the worker
handled it (stored it, or dropped it as invalid), so a hub killed with messages in its
in-memory queue gets them again from the broker when it comes back. The store removes
duplicates (telemetry by ``(seq, time)``; reports and presence are last-wins, a report never
going back to a lower ``lastAppliedSequence``).

Build order: the services take the bridge as their link, and the bridge gets the services
when it starts serving (as a server gets its application), so neither is assigned later::

    bridge = MqttBridge(parse_broker_url("mqtt://127.0.0.1:1883"))
    services = HubServices.build(store, blobs, trust_root, signers, bridge)
    bridge.start(services)   # connects, subscribes, re-publishes the trust root and every newest document
    ...
    bridge.stop()
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import paho.mqtt.client as paho

from edgeship.errors import TransportError
from edgeship.hub.bridge.limits import InboundLimits
from edgeship.hub.bridge.methods import MethodInvoker
from edgeship.hub.bridge.packets import read_in_bursts
from edgeship.hub.bridge.publisher import DocumentPublisher
from edgeship.hub.bridge.resync import Resync
from edgeship.hub.bridge.subscriber import Subscriber, subscriptions
from edgeship.hub.services import HubServices, Outgoing
from edgeship.mqtt import BrokerSettings, device_topic, parse_device_topic
from edgeship.mqtt.client import connect_properties, make_client, reason_text

__all__ = ["CONNECT_TIMEOUT", "MAX_INFLIGHT", "MqttBridge"]

MAX_INFLIGHT = 1000  # MQTT 5: unacknowledged QoS 1 publishes at once (DESIGN.md: batch, never wait per message)
CONNECT_TIMEOUT = 10.0  # seconds start() waits for the first CONNACK

log = logging.getLogger("edgeship.hub.bridge")


class MqttBridge:
    def __init__(self, settings: BrokerSettings, *, client_id: str | None = None, group: str = "hub",
                 limits: InboundLimits | None = None, inbound: bool = True) -> None:
        """The session is persistent whenever the client id is stable: ``client_id``, else the broker
        username (``hub``, ``hub-<name>``: what the generated Mosquitto config makes it anyway,
        ADR 0015). Messages devices send while the hub is away are then queued by the broker
        and delivered when it reconnects (MQTT 3.1.1 ``clean_session=False``; MQTT 5
        ``clean_start=False`` with a day's session expiry). Each hub process needs its own
        broker user: two under one would take turns.

        Without a login (the embedded broker) the id is a random ``edgeship-hub-<hex>`` with a
        clean session: that broker lives and dies with the hub process anyway. The retained
        ``reported`` and ``online`` messages arrive on every subscribe either way.

        ``limits``: what devices may send (sizes, rates, the inbound byte budget; ``limits.py``).
        ``inbound=False``: the devices' ``reported``/``telemetry``/``online`` come from a NATS stream shared by
        the replicas (``nats_inbound.py``, ADR 0047), not from MQTT subscriptions; the subscriber is still made
        here, and what the session subscribed to in an earlier run is unsubscribed.
        """
        self.inbound = inbound
        self.settings = settings
        self.group = group
        self.client_id = client_id or settings.username or f"edgeship-hub-{secrets.token_hex(4)}"
        self._persistent = client_id is not None or settings.username is not None
        # MQTT 3.1.1 has no receive maximum: no in-flight cap, so paho never rescans its outgoing messages on
        # each PUBACK (with a cap it walks them from the oldest: ~1 s of CPU for 10,000 documents).
        self.client = make_client(settings, self.client_id, persistent=self._persistent,
                                  max_inflight=MAX_INFLIGHT if settings.protocol == "5" else 0, max_queued=0)
        self.client.manual_ack_set(True)  # PUBACK once handled (_ack), so a killed hub gets the message again
        read_in_bursts(self.client)  # many PUBACKs and reports per wake-up of paho's thread (packets.py)
        self.publisher = DocumentPublisher(self.client)
        self.methods = MethodInvoker(self.client)
        self.subscriber: Subscriber | None = None
        self.resync: Resync | None = None  # after devices come back online (resync.py); made by start()
        self._services: HubServices | None = None  # what start() serves
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

    # DeviceLink (edgeship.hub.services.link): each works before start() and after stop(); while the broker is
    # away documents and trust roots are not queued (re-sent on connect) and a direct method is a TransportError.
    def publish(self, documents: Sequence[Outgoing]) -> None:
        self.publisher.publish(documents)

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        self.publisher.publish_trust_root(message, device_ids)

    def forget(self, device_id: str) -> None:
        self.publisher.forget(device_id)

    def confirm_telemetry(self, device_id: str, seq: int, refused: str | None) -> None:
        """QoS 0 (ADR 0049): a lost confirmation costs one copy of the batch; a stored one would cost the broker a
        write per batch (on NATS, a stream write)."""
        message = {"seq": seq} if refused is None else {"seq": seq, "refused": refused[:500]}
        self.client.publish(device_topic(device_id, "telemetry-stored"), json.dumps(message).encode(), qos=0)

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        return self.methods.invoke(device_id, method, args, timeout)

    def start(self, services: HubServices, *, timeout: float = CONNECT_TIMEOUT) -> MqttBridge:
        """Serve ``services``: connect, then wait for the first subscribe and republish; a broker that stays
        away is a TransportError. Inbound messages go to ``services.fleet``; on every connect the trust-root
        chain and every device's newest document go out again."""
        self._services = services
        self.subscriber = Subscriber(services.fleet, self.limits)
        self.subscriber.start()
        self.resync = Resync(self.client, services.store, self.publisher)
        self.resync.start()
        properties = connect_properties(self.settings, self._persistent)
        extra: dict[str, Any] = {}
        if properties is not None:  # MQTT 5: resume the session from the first connect on, not only later ones
            extra = {"clean_start": not self._persistent, "properties": properties}
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive,
                                  **extra)
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
        if self.resync is not None:
            self.resync.stop()
        self.publisher.close()  # what was handed over goes to paho before the disconnect
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
        wanted = subscriptions(self.settings.protocol, self.group, inbound=self.inbound)
        # A persistent session keeps the filters of an earlier run: one that spoke the other protocol (shared vs
        # plain filters), or took the inbound messages over MQTT, would get every device message twice (or a
        # copy nobody needs). Drop those before subscribing.
        earlier = subscriptions("3.1.1", self.group) + subscriptions("5", self.group)
        stale = [topic for topic, _qos in earlier if topic not in {t for t, _q in wanted}]
        client.unsubscribe(stale)
        client.subscribe([(topic, qos) for topic, qos in wanted])
        subscriber = self.subscriber
        if subscriber is not None and not subscriber.submit(self._republish):
            log.error("the hub's inbound queue is full; the newest documents were not re-published")
        log.info("connected to MQTT broker %s as %s", self.settings.url, self.client_id)

    def _republish(self) -> None:
        services = self._services
        if services is None:
            return
        services.trust.deliver_trust_root(None)  # before the documents a rotated hub key signed
        self.republished = self.publisher.republish(services.issuing.current_documents)
        self._republished.set()
        log.info("re-published the newest document of %d device(s)", self.republished)

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        if getattr(reason, "is_failure", bool(reason)):
            log.warning("lost the MQTT broker %s (%s); reconnecting", self.settings.url, reason_text(reason))

    def _on_message(self, client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        topic = parse_device_topic(message.topic)
        subscriber = self.subscriber
        if topic is None:
            if subscriber is not None:  # counted and summarised: a device must not flood the log
                subscriber.drop_foreign(message.topic)
            client.ack(message.mid, message.qos)
            return
        payload = bytes(message.payload)
        if topic.channel == "responses":
            self.methods.on_response(topic, payload)
        elif subscriber is not None and topic.channel in ("reported", "telemetry", "online"):
            if topic.channel == "online" and payload == b"1" and not message.retain and self.resync is not None:
                self.resync.device_online()  # a device (re)connected: what a broker node's loss lost is recovered
            # Acknowledged by the worker once the message is in the database (a report: once its batch's
            # transaction committed), not on receipt: a replica killed between the two and never restarted
            # leaves it to the survivor's drain (adopt.py), which gets only unacknowledged messages and is
            # sent no retained ones (ADR 0037, revision: lost reports stalled rollouts).
            subscriber.on_message(topic, payload, partial(self._ack, message.mid, message.qos, self.connections))
            return
        client.ack(message.mid, message.qos)

    def _ack(self, mid: int, qos: int, connection: int) -> None:
        """PUBACK a handled message, unless the connection it came on is gone: the broker sends it again
        on the resumed session (same mid), and it is handled (and de-duplicated) again."""
        if qos > 0 and connection == self.connections and self._connected.is_set():
            self.client.ack(mid, qos)
