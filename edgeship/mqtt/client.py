"""Make a paho-mqtt 2.x client from :class:`BrokerSettings`: callbacks v2, TLS, login, will, backoff.

The one place that knows paho's constructor. Both the hub bridge and the agent
link call :func:`make_client` and then set their own callbacks; neither builds a
``paho.mqtt.client.Client`` directly.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edgeship.mqtt.settings import BrokerSettings
from edgeship.records import record

__all__ = [
    "RECONNECT_MAX", "RECONNECT_MIN", "Will", "connect_properties", "make_client", "mqtt_client_id", "reason_text",
]

RECONNECT_MIN = 1  # seconds before the first reconnect attempt
RECONNECT_MAX = 30  # seconds: the backoff doubles up to this


def mqtt_client_id(name: str) -> str:
    """The MQTT client id for a device id or hub identity: ``.`` is sent as ``~``, which no id contains.

    NATS refuses client ids with ``.`` (ADR 0039); the mapping is one-to-one and leaves
    ids without ``.`` as they are. Mosquitto's generated config replaces the client id
    with the username anyway (``use_username_as_clientid``), so it sees no change.
    """
    return name.replace(".", "~")


@record
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def make_client(
    settings: BrokerSettings,
    client_id: str,
    *,
    persistent: bool = True,
    will: Will | None = None,
    max_inflight: int = 100,
    max_queued: int = 0,
) -> paho.Client:
    """A configured, not yet connected client.

    ``persistent`` keeps the broker-side session (subscriptions and queued QoS 1
    messages survive a disconnect): MQTT 3.1.1 ``clean_session=False``, or an MQTT 5
    session that does not expire for a day.
    """
    if settings.protocol == "5":
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=mqtt_client_id(client_id),
                             protocol=paho.MQTTv5)
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=mqtt_client_id(client_id), clean_session=not persistent,
            protocol=paho.MQTTv311,
        )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.cert_file is not None and settings.key_file is not None:
            context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
        client.tls_set_context(context)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    return client


def connect_properties(settings: BrokerSettings, persistent: bool) -> paho.Properties | None:
    """MQTT 5 CONNECT properties: a session that outlives a disconnect when ``persistent``."""
    if settings.protocol != "5":
        return None
    from paho.mqtt.packettypes import PacketTypes

    props = paho.Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 86400 if persistent else 0
    return props


def reason_text(reason: object) -> str:
    """A paho reason code (v2 ``ReasonCode`` or an int rc) as words for a log line or an error."""
    if isinstance(reason, int):
        return paho.error_string(reason) if reason else "success"
    return str(reason)
