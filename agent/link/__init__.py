"""The agent's link to the hub: MQTT (``edgeship.mqtt`` contract)."""

from __future__ import annotations

from edgeship.agent.link.mqtt import Inbound, MqttLink

__all__ = ["Inbound", "MqttLink"]
