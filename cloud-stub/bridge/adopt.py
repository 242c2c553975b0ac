"""Draining a dead replica's broker session, so the device messages queued for it are stored (ADR 0037).

Measured on Mosquitto 2.0.11 (``docs/scale.md``): a member of an MQTT 5 shared
subscription that dies keeps, in its persistent session, the QoS 1 messages in flight
to it and those queued behind them, and the broker goes on giving that session its
round-robin share of new messages while it is away: nothing goes to the other members
until a client with that id comes back. With a clean session (expiry 0) those
messages are dropped instead. So replicas keep persistent sessions (nothing is lost)
and a survivor takes the dead one's place for as long as it takes to empty it:

1. connect with the dead replica's client id, resuming its session;
2. unsubscribe its filters, so the broker gives it no new messages;
3. store and acknowledge what the broker sends, as the bridge does (``Subscriber``:
   the same limits, the same idempotent stores);
4. once nothing has arrived for ``quiet`` seconds and everything received is handled,
   disconnect with a session expiry of 0: the broker deletes the session.

A replica that comes back meanwhile takes its session over (the broker disconnects
the adopter) and gets the unacknowledged rest itself: at least once either way.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any

import paho.mqtt.client as paho

from edgeship.errors import TransportError
from edgeship.hub.bridge.limits import InboundLimits
from edgeship.hub.bridge.subscriber import INBOUND_CHANNELS, Subscriber, subscriptions
from edgeship.hub.services import Fleet
from edgeship.mqtt import BrokerSettings, parse_device_topic
from edgeship.mqtt.client import connect_properties, make_client, reason_text
from edgeship.records import replace

__all__ = ["QUIET", "adopt_session"]

QUIET = 1.0  # seconds without a message after which a drained session is taken to be empty
TIMEOUT = 120.0  # seconds a drain may take at most

log = logging.getLogger("edgeship.hub.bridge")


def adopt_session(settings: BrokerSettings, client_id: str, fleet: Fleet, *, group: str = "hub",
                  limits: InboundLimits | None = None, quiet: float = QUIET, timeout: float = TIMEOUT) -> int:
    """Store every message queued in ``client_id``'s session, then end the session; returns how many arrived.

    ``settings`` are this replica's; with a broker login the adopter logs in as ``client_id`` with this replica's
    password (replicas share one password, each its own ``hub-<name>`` user). A TransportError when the broker
    refuses or does not answer.
    """
    login = replace(settings, username=client_id) if settings.username is not None else settings
    client = make_client(login, client_id, persistent=True, max_inflight=1000, max_queued=0)
    client.manual_ack_set(True)
    subscriber = Subscriber(fleet, limits)
    subscriber.start()
    ready, failed = threading.Event(), list[str]()
    count, last = [0], [time.monotonic()]  # messages so far; monotonic time of the last one

    def on_connect(c: paho.Client, _u: object, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", bool(reason)):
            failed.append(reason_text(reason))
            ready.set()
            return
        c.unsubscribe([topic for topic, _qos in subscriptions(settings.protocol, group)])
        ready.set()

    def on_message(c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        count[0] += 1
        last[0] = time.monotonic()
        topic = parse_device_topic(message.topic)
        if topic is None or topic.channel not in INBOUND_CHANNELS:
            c.ack(message.mid, message.qos)  # a dead replica's method responses: nobody waits for them now
            return
        subscriber.on_message(topic, bytes(message.payload), partial(_ack, c, message.mid, message.qos))

    client.on_connect = on_connect
    client.on_message = on_message
    properties = connect_properties(login, True)
    extra: dict[str, Any] = {"clean_start": False, "properties": properties} if properties is not None else {}
    try:
        client.connect(login.host, login.port, keepalive=login.keepalive, **extra)
    except OSError as exc:
        subscriber.stop()
        raise TransportError(f"Cannot reach the MQTT broker at {login.url} to drain {client_id!r}: {exc}") from exc
    client.loop_start()
    try:
        if not ready.wait(timeout) or failed:
            raise TransportError(f"The MQTT broker at {login.url} would not let this hub drain the session of "
                                 f"{client_id!r} ({failed[0] if failed else 'no answer'}); check its login.")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(min(quiet, 0.2))
            if time.monotonic() - last[0] < quiet:
                continue
            handled = threading.Event()
            subscriber.submit(handled.set)  # after every message queued so far and its acknowledgement
            if handled.wait(timeout) and time.monotonic() - last[0] >= quiet:
                break
        _end_session(client, login)
    finally:
        client.loop_stop()
        subscriber.stop()
    log.info("drained the session of replica %r: %d message(s)", client_id, count[0])
    return count[0]


def _ack(client: paho.Client, mid: int, qos: int) -> None:
    if qos > 0:
        client.ack(mid, qos)


def _end_session(client: paho.Client, settings: BrokerSettings) -> None:
    """Disconnect so that the broker forgets the session (MQTT 5: expiry 0; 3.1.1 cannot say so)."""
    if settings.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes

        props = paho.Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        client.disconnect(properties=props)
    else:
        client.disconnect()
    time.sleep(0.1)  # let paho's thread send the DISCONNECT before loop_stop
