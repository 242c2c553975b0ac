"""The hub's own errors, under edgeship's one tree (``edgeship.errors``).

They carry no HTTP status: ``edgeship.hub.api.errors`` maps them in one place, and
the MQTT bridge will map them its own way.
"""

from __future__ import annotations

from edgeship.errors import InputError, TransportError

__all__ = ["AlreadyExistsError", "DeviceTimeoutError", "HubNotFoundError"]


class HubNotFoundError(InputError):
    """No device, module, deployment or blob has the requested id."""


class AlreadyExistsError(InputError):
    """Something with that id exists already and differs from what was asked for."""


class DeviceTimeoutError(TransportError):
    """A device did not answer a direct method in time (offline, busy, or no agent running)."""
