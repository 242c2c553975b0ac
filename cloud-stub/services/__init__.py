"""The hub's service layer: what REST routes and the MQTT bridge both call (ADR 0022).

As Seldon MLServer's ``DataPlane``: transports do the protocol-specific work and
delegate here; nothing in this package knows about HTTP or MQTT. Errors are
``edgeship.errors`` classes without status codes. One responsibility per module:

- ``fleet.py`` — devices, tags, reported state, presence, telemetry, direct methods;
- ``catalog.py`` — verified modules and the blobs devices download;
- ``deployments.py`` — deployments and their status;
- ``rollouts.py`` — staged rollouts: the engine's step, pause/resume/approve/abort, what ``show`` says;
- ``issuing.py`` — re-evaluation, layering, signing, the outbox drain and refresh;
- ``trust.py`` — trust-root rotation and the chain devices get;
- ``keys.py`` — the current trust root and hub signers, shared under one lock;
- ``rules.py`` — the pure input checks;
- ``link.py`` — ``DeviceLink``, the one outbound protocol towards devices;
- ``hub.py`` — ``HubServices``, the graph built in one place.
"""

from __future__ import annotations

from edgeship.hub.services.catalog import Catalog
from edgeship.hub.services.deployments import Deployments, ModuleRefSpec
from edgeship.hub.services.fleet import DeviceView, Fleet
from edgeship.hub.services.hub import HubServices
from edgeship.hub.services.issuing import REEVALUATE_BATCH, Issuing
from edgeship.hub.services.keys import SigningKeys
from edgeship.hub.services.link import DeviceLink, OfflineLink, Outgoing
from edgeship.hub.services.rollouts import Rollouts, Wakeup
from edgeship.hub.services.rules import (
    MAX_METHOD_TIMEOUT,
    MIN_METHOD_TIMEOUT,
    validate_deployment_id,
    validate_device_id,
    validate_module_name,
)
from edgeship.hub.services.trust import TrustRotation

__all__ = [
    "MAX_METHOD_TIMEOUT",
    "MIN_METHOD_TIMEOUT",
    "REEVALUATE_BATCH",
    "Catalog",
    "Deployments",
    "DeviceLink",
    "DeviceView",
    "Fleet",
    "HubServices",
    "Issuing",
    "ModuleRefSpec",
    "OfflineLink",
    "Outgoing",
    "Rollouts",
    "SigningKeys",
    "TrustRotation",
    "Wakeup",
    "validate_deployment_id",
    "validate_device_id",
    "validate_module_name",
]
