"""The MQTT contract both sides speak: topic names, broker settings, and a paho client factory.

The hub (``edgeship.hub.bridge``) and the agent (``edgeship.agent.link``) import
only this package for MQTT details, so the topic layout of ``docs/mqtt.md`` lives
in one place. ``paho-mqtt`` is imported by :mod:`edgeship.mqtt.client` only.
"""

from __future__ import annotations

from edgeship.mqtt.settings import BrokerSettings, parse_broker_url
from edgeship.mqtt.topics import (
    TOPIC_ROOT,
    DeviceTopic,
    command_topic,
    device_topic,
    parse_device_topic,
    response_topic,
)

__all__ = [
    "TOPIC_ROOT",
    "BrokerSettings",
    "DeviceTopic",
    "command_topic",
    "device_topic",
    "parse_broker_url",
    "parse_device_topic",
    "response_topic",
]
