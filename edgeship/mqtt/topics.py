"""Topic names of the MQTT contract (``docs/mqtt.md``); pure string functions.

::

    edgeship/v1/devices/{id}/desired              hub -> device, retained, QoS 1: signed deployment document
    edgeship/v1/devices/{id}/trust-root           hub -> device, retained, QoS 1: {"chain": [trust-root envelopes]}
    edgeship/v1/devices/{id}/reported             device -> hub, retained, QoS 1: reported state (JSON)
    edgeship/v1/devices/{id}/telemetry            device -> hub, QoS 1: a batch of metrics (JSON)
    edgeship/v1/devices/{id}/telemetry-stored     hub -> device, QoS 0: {"seq": N} the hub stored a batch (ADR 0049)
    edgeship/v1/devices/{id}/online               device -> hub, retained: "1"; last will "0"
    edgeship/v1/devices/{id}/commands/{method}/{rid}   operator -> device, QoS 1: a direct method call (JSON args)
    edgeship/v1/devices/{id}/responses/{rid}      device -> operator, QoS 1: its answer (JSON)

A device id never contains ``/``, ``+`` or ``#`` (``edgeship.hub.services.validate_device_id``),
so each id names exactly one subtree and an ACL pattern ``edgeship/v1/devices/%u/...`` isolates it.
"""

from __future__ import annotations

import re
from typing import Literal

from edgeship.records import record

__all__ = [
    "CHANNELS",
    "TOPIC_ROOT",
    "Channel",
    "DeviceTopic",
    "command_topic",
    "device_topic",
    "parse_device_topic",
    "response_topic",
]

TOPIC_ROOT = "edgeship/v1/devices"
Channel = Literal[
    "desired", "reported", "telemetry", "online", "commands", "responses", "trust-root", "telemetry-stored"
]
CHANNELS: tuple[Channel, ...] = (
    "desired", "reported", "telemetry", "online", "commands", "responses", "trust-root", "telemetry-stored"
)
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # ids, method names and request ids


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot be part of an MQTT topic; use 1-128 letters, digits, '.', '_', ':' or '-'."
        )
    return value


def device_topic(device_id: str, channel: Channel) -> str:
    """``edgeship/v1/devices/{id}/{channel}``; for ``commands``/``responses`` use the functions below."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return f"{TOPIC_ROOT}/{_segment(device_id, 'Device id')}/{channel}"


def command_topic(device_id: str, method: str, request_id: str) -> str:
    return f"{device_topic(device_id, 'commands')}/{_segment(method, 'Method')}/{_segment(request_id, 'Request id')}"


def response_topic(device_id: str, request_id: str) -> str:
    return f"{device_topic(device_id, 'responses')}/{_segment(request_id, 'Request id')}"


@record
class DeviceTopic:
    """A parsed device topic: whose, which channel, and the rest (``[method, rid]`` or ``[rid]``)."""

    device_id: str
    channel: Channel
    rest: tuple[str, ...] = ()


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """The parts of a contract topic, or ``None`` for anything else (never raises on foreign topics)."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:3]) != TOPIC_ROOT:
        return None
    device_id, channel, rest = parts[3], parts[4], tuple(parts[5:])
    if not _SEGMENT.fullmatch(device_id) or channel not in CHANNELS:
        return None
    expected = {"commands": 2, "responses": 1}.get(channel, 0)
    if len(rest) != expected or not all(_SEGMENT.fullmatch(p) for p in rest):
        return None
    return DeviceTopic(device_id, channel, rest)  # channel was checked against CHANNELS above
