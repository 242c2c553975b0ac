"""Who is who on the broker: the one rule for device ids and the names reserved for the hub.

A broker login *is* an identity: the username (or a client certificate's common
name) is the device id, the generated Mosquitto config binds the MQTT client id to
it, and its ACL gives a user the hub's rights by name (``docs/broker-security.md``,
ADR 0015). So two sets of names must never meet:

- **hub identities**: ``hub`` and ``hub-<name>`` (any case), one per hub process;
- **device ids**: everything else that is usable as one MQTT topic segment.

A device named like a hub identity would log in with the hub's rights (read every
device's channels, publish any desired document, forge any ``reported``), so every
place where a name *becomes* a broker identity calls :func:`validate_new_device_id`:
``POST /devices`` and bulk creation (``Fleet``), credentials issue and rotation
(``DeviceCredentials``), device certificates (``CertificateAuthority.issue_client``),
``edgeship device create`` and ``edgeship hub broker-config``. Looking a device up,
deleting it or reading its messages uses :func:`validate_device_id` (syntax only), so a
device created before the reservation can still be found and deleted.
"""

from __future__ import annotations

import re

from edgeship.errors import InputError

__all__ = [
    "HUB_IDENTITY",
    "HUB_PREFIX",
    "RESERVED_NAMES",
    "is_hub_identity",
    "validate_device_id",
    "validate_hub_identity",
    "validate_new_device_id",
]

HUB_IDENTITY = "hub"
"""The hub's default broker user (one hub process)."""
HUB_PREFIX = "hub-"
"""``hub-<name>``: the broker users of further hub processes (replicas), each with its own session."""
RESERVED_NAMES = f"'{HUB_IDENTITY}' and names starting with '{HUB_PREFIX}' (any case)"
"""The reservation in words, for error messages and docs."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # one MQTT topic segment: no '/', '+', '#'


def validate_device_id(device_id: str) -> str:
    """``device_id`` if it can name a device's topics (1-128 of ``A-Za-z0-9._:-``), else InputError.

    Syntax only: use it to look a device up. A *new* device id goes through
    :func:`validate_new_device_id`.
    """
    if not isinstance(device_id, str) or not _ID.fullmatch(device_id):
        raise InputError(
            f"Device id {device_id!r} must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a "
            "letter or digit (it becomes part of MQTT topics)."
        )
    return device_id


def is_hub_identity(name: str) -> bool:
    """Whether ``name`` is reserved for the hub: ``hub`` or ``hub-...``, compared case-insensitively.

    Mosquitto compares usernames case-sensitively, so ``Hub`` could not take the hub's
    rights; it is reserved anyway, so no device id reads like the hub to an operator.
    """
    lowered = name.lower()
    return lowered == HUB_IDENTITY or lowered.startswith(HUB_PREFIX)


def validate_new_device_id(device_id: str) -> str:
    """``device_id`` if a new device (and so a new broker identity) may take it, else InputError."""
    validate_device_id(device_id)
    if is_hub_identity(device_id):
        raise InputError(
            f"Device id {device_id!r} is reserved for the hub's broker identities ({RESERVED_NAMES}), and a "
            "device with it would log in with the hub's rights; choose another id."
        )
    return device_id


def validate_hub_identity(name: str) -> str:
    """``name`` if a hub process may log in to the broker with it (``hub`` or ``hub-<name>``), else InputError."""
    if not isinstance(name, str) or not _ID.fullmatch(name) or not is_hub_identity(name):
        raise InputError(
            f"Hub broker user {name!r} must be '{HUB_IDENTITY}' or '{HUB_PREFIX}<name>' (letters, digits, '.', "
            "'_', ':' or '-'): only those names carry the hub's rights in the generated ACL, and no device can "
            "take them."
        )
    return name
