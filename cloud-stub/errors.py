"""The hub's own errors, under edgeship's one tree (``edgeship.errors``).

They carry no HTTP status: ``edgeship.hub.api.errors`` maps them in one place, and
the MQTT bridge will map them its own way.
"""

from __future__ import annotations

from edgeship.errors import EdgeshipError, InputError, TransportError

__all__ = [
    "AlreadyExistsError", "DeviceTimeoutError", "HubNotFoundError", "RolloutStateError", "SequenceExhaustedError",
]


class HubNotFoundError(InputError):
    """No device, module, deployment or blob has the requested id."""


class AlreadyExistsError(InputError):
    """Something with that id exists already and differs from what was asked for."""


class RolloutStateError(InputError):
    """A rollout action its state does not allow (approve a rollout that waits for nothing, resume one not paused)."""


class DeviceTimeoutError(TransportError):
    """A device did not answer a direct method in time (offline, busy, or no agent running)."""


class SequenceExhaustedError(EdgeshipError):
    """A device's document counter reached :data:`edgeship.deployment.MAX_SEQUENCE`.

    Agents refuse a higher sequence, so the hub refuses to issue one. At one document
    a second this takes 68 years; it is a guard, not a plan.
    """
