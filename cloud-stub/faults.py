"""Named fault-injection points for tests that kill a real hub process at an exact moment (test-only).

``EDGESHIP_FAULT=<name>`` in a hub's environment makes the process SIGKILL itself when
it reaches the point of that name, so a test can show what a crash there leaves behind
(ADR 0019). Unset, a point costs one environment lookup. Never set it in production:
it exists only so that a kill lands between two steps a test could not otherwise hit.

Points:

- ``hub.after-change-commit``: a change (deployment, device, tags) and its re-evaluation
  intent are committed, no document of it has been signed or published yet;
- ``hub.before-telemetry-store``: the hub's worker took a valid telemetry batch off its
  queue and is about to store it (the message is not acknowledged yet).
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["AFTER_CHANGE_COMMIT", "BEFORE_TELEMETRY_STORE", "FAULT_ENV", "fault_point"]

FAULT_ENV = "EDGESHIP_FAULT"
AFTER_CHANGE_COMMIT = "hub.after-change-commit"
BEFORE_TELEMETRY_STORE = "hub.before-telemetry-store"

log = logging.getLogger("edgeship.hub")


def fault_point(name: str) -> None:
    """SIGKILL this process if ``EDGESHIP_FAULT`` names this point (no clean-up runs, as in a real crash)."""
    if os.environ.get(FAULT_ENV) == name:
        log.critical("fault injection: %s=%s, killing the hub process", FAULT_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)
