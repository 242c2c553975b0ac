"""``DeviceLink``: everything the hub's services send towards devices, as one protocol passed in at construction.

The services decide *what* goes out (a signed document, the trust-root chain, a
deleted device's clean-up, a direct method); the link only carries it. The MQTT
bridge (``edgeship.hub.bridge.MqttBridge``) is the product's link; a hub without a
broker (an API-only test, a tool) gets :class:`OfflineLink`; tests record what went
out with an in-memory link of their own (``tests/hub/memory_link.py``).

Invariants every link keeps (``docs/mqtt.md``):

- :meth:`DeviceLink.publish` never blocks on a device and may drop a batch while the
  broker is away: the store is the queue, and a link re-sends every device's newest
  document when it (re)connects;
- a document older than one already sent for that device is never sent after it;
- :meth:`DeviceLink.publish_trust_root` for a device goes out before any document
  published after it (same connection, same order);
- :meth:`DeviceLink.confirm_telemetry` may be lost (QoS 0): an agent that misses it sends
  the batch again, and the hub stores each sample once (ADR 0049).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edgeship.errors import TransportError

__all__ = ["DeviceLink", "OfflineLink", "Outgoing"]


@dataclass(frozen=True)
class Outgoing:
    """A signed document to publish retained on ``edgeship/v1/devices/{device_id}/desired``."""

    device_id: str
    sequence: int
    envelope: bytes


class DeviceLink(Protocol):
    """The hub's one outbound path to devices."""

    def publish(self, documents: Sequence[Outgoing]) -> None:
        """Send a batch of newly signed documents (retained); wait for none of them."""

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        """Send the trust-root chain (retained) to each listed device, before any later document."""

    def forget(self, device_id: str) -> None:
        """A deleted device: clear what is retained for it and forget its newest sequence."""

    def confirm_telemetry(self, device_id: str, seq: int, refused: str | None) -> None:
        """Tell a device the hub stored (or refused, saying why) its telemetry batch up to ``seq``; may be lost."""

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Call a direct method and return the device's answer ``{"status", "result"|"error"}``.

        Raises ``DeviceTimeoutError`` when the device does not answer within ``timeout``
        seconds and ``TransportError`` when the device cannot be reached at all.
        """


class OfflineLink:
    """The link of a hub with no broker: documents stay in the store, direct methods are refused.

    Nothing is lost by dropping: a hub that later runs with a broker re-publishes every
    device's newest document and the trust-root chain when its bridge connects.
    """

    def publish(self, documents: Sequence[Outgoing]) -> None:
        return None

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        return None

    def forget(self, device_id: str) -> None:
        return None

    def confirm_telemetry(self, device_id: str, seq: int, refused: str | None) -> None:
        return None

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        raise TransportError(
            "This hub has no MQTT connection, so it cannot reach devices; run it with 'edgeship hub serve'."
        )
