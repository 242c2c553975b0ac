"""``MemoryLink``: the hub's ``DeviceLink`` in memory, so service tests see what would go to devices, in order.

A fake of an interface the product defines itself (``edgeship.hub.services.link``),
never a patch: tests build the real services with it (``HubWorld.services``) and read
:attr:`MemoryLink.events` or :attr:`MemoryLink.documents`. Direct methods are answered by
``answer`` (by default: no broker, as ``OfflineLink``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeship.hub.services import OfflineLink, Outgoing

__all__ = ["MemoryLink", "SlowLink"]

Answer = Callable[[str, str, Mapping[str, Any], float], dict[str, Any]]


@dataclass
class MemoryLink:
    """Everything the services sent, as ``(kind, device id, payload)`` events and as documents."""

    answer: Answer = field(default=OfflineLink().invoke)
    events: list[tuple[str, str, bytes]] = field(default_factory=list)
    documents: list[Outgoing] = field(default_factory=list)
    batches: list[list[Outgoing]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    confirmed: list[tuple[str, int, str | None]] = field(default_factory=list)  # telemetry-stored messages
    failure: Exception | None = None  # set: publish raises it (a link that broke mid-delivery)

    def publish(self, documents: Sequence[Outgoing]) -> None:
        if self.failure is not None:
            raise self.failure
        self.batches.append(list(documents))
        self.documents.extend(documents)
        self.events += [("desired", o.device_id, o.envelope) for o in documents]

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        self.events += [("trust-root", d, message) for d in device_ids]

    def forget(self, device_id: str) -> None:
        self.forgotten.append(device_id)

    def confirm_telemetry(self, device_id: str, seq: int, refused: str | None) -> None:
        self.confirmed.append((device_id, seq, refused))

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        return self.answer(device_id, method, args, timeout)

    def clear(self) -> None:
        self.events.clear()
        self.documents.clear()
        self.batches.clear()


@dataclass
class SlowLink(MemoryLink):
    """Sends the trust root slowly, so a rotation is still running when a second one (or a re-evaluation) starts."""

    delay: float = 0.2

    def publish_trust_root(self, message: bytes, device_ids: Sequence[str]) -> None:
        time.sleep(self.delay)
        super().publish_trust_root(message, device_ids)
