"""The hub's ``telemetry-stored`` messages: which samples the hub has stored (ADR 0049).

After the hub stores a telemetry batch (or finds it already stored, or refuses it for
its content) it publishes ``{"seq": N}`` on the device's ``telemetry-stored`` topic,
``N`` being the batch's highest sample ``seq``; a refusal adds ``"refused": "<why>"``.
A device's ``seq`` never repeats and its batches go out one at a time, so the highest
``seq`` confirmed so far tells the sender whether its batch in flight was stored.

:meth:`StoredConfirmations.note` runs in paho's network thread; the sender reads from
its own. A payload that is not such an object is ignored (and logged at debug level):
only the hub may publish there, and a wrong message must not make the agent drop samples.
"""

from __future__ import annotations

import json
import logging
import threading

__all__ = ["MAX_CONFIRMATION_BYTES", "StoredConfirmations"]

MAX_CONFIRMATION_BYTES = 4096
_MAX_SEQ = 2**63 - 1
log = logging.getLogger("edgeship.agent")


class StoredConfirmations:
    """The highest confirmed ``seq``, the refusal that came with a ``seq``, and how many confirmations arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._refused: tuple[int, str] | None = None  # the newest refusal: (its seq, the hub's reason)
        self._count = 0

    def note(self, payload: bytes) -> bool:
        """Take one ``telemetry-stored`` payload; False (and nothing changes) when it is not a valid one."""
        parsed = _parse(payload)
        if parsed is None:
            log.debug("ignored a telemetry-stored message that is not {\"seq\": N}: %r", payload[:100])
            return False
        seq, refused = parsed
        with self._lock:
            self._seq = max(self._seq, seq)
            self._count += 1
            if refused is not None:
                self._refused = (seq, refused)
        return True

    @property
    def seq(self) -> int:
        """The highest ``seq`` the hub confirmed since the agent started (0: none)."""
        with self._lock:
            return self._seq

    @property
    def count(self) -> int:
        """Confirmations taken since the agent started."""
        with self._lock:
            return self._count

    def refusal(self, seq: int) -> str | None:
        """The hub's reason when it refused the batch whose highest ``seq`` is ``seq``."""
        with self._lock:
            return self._refused[1] if self._refused is not None and self._refused[0] == seq else None


def _parse(payload: bytes) -> tuple[int, str | None] | None:
    if len(payload) > MAX_CONFIRMATION_BYTES:
        return None
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict):
        return None
    seq, refused = message.get("seq"), message.get("refused")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= _MAX_SEQ:
        return None
    if refused is not None and not isinstance(refused, str):
        return None
    return seq, refused
