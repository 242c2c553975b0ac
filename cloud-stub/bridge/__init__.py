"""The hub's MQTT bridge: a thin transport between the broker and the services (``edgeship.hub.services``).

- :class:`MqttBridge` (``link.py``): the one paho connection, its callbacks, start/stop; the product's
  ``DeviceLink`` (documents, trust root, forgetting a device, direct methods out);
- :class:`DocumentPublisher` (``publisher.py``): signed documents out, retained, QoS 1, batched;
- :class:`Subscriber` (``subscriber.py``): ``reported``/``telemetry``/``online`` in, via a worker thread;
- :class:`MethodInvoker` (``methods.py``): direct methods and their answers;
- :class:`InboundLimits` (``limits.py``): sizes, per-device rates and the byte budget of inbound work.

Topics and payloads: ``docs/mqtt.md``.
"""

from __future__ import annotations

from edgeship.hub.bridge.limits import ChannelLimit, InboundLimits, InboundStats
from edgeship.hub.bridge.link import MqttBridge
from edgeship.hub.bridge.methods import MethodInvoker
from edgeship.hub.bridge.publisher import DocumentPublisher
from edgeship.hub.bridge.subscriber import MAX_MESSAGE_BYTES, Subscriber, subscriptions

__all__ = [
    "MAX_MESSAGE_BYTES", "ChannelLimit", "DocumentPublisher", "InboundLimits", "InboundStats", "MethodInvoker",
    "MqttBridge", "Subscriber", "subscriptions",
]
