"""The embedded MQTT broker (amqtt) that lets ``edgeship hub serve --embedded-broker`` run on a laptop.

At fleet scale use Mosquitto or EMQX (``docs/mqtt.md``); amqtt speaks MQTT 3.1.1
only, so hub replicas cannot share subscriptions on it.
"""

from __future__ import annotations

from edgeship.hub.broker.embedded import EmbeddedBroker

__all__ = ["EmbeddedBroker"]
