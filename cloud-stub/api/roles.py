"""What each operator-token role may do over the REST API: one pure rule, applied to every route.

``operator`` may do everything the API offers. ``read-only`` (a dashboard, a
monitoring job) may read everything and change nothing:

- any ``GET`` or ``HEAD``: devices, their desired documents and telemetry, modules,
  deployments with status, the trust root. No ``GET`` returns a secret: device
  credentials appear only in the answers of the ``POST`` that issues them;
- ``POST /devices/{id}/methods/logs``: reading a module's log tail on the device (the
  agent's ``logs`` method reads files and changes nothing). Every other direct method
  (``restart``, and any a later agent adds) needs ``operator``: the list is an
  allow-list, so a new method is closed to ``read-only`` until it is added here.

Everything else (create, delete, re-tag, rotate credentials, upload, publish a trust
root, other methods) is refused with 403 naming the role.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeship.hub.store.tokens import OPERATOR, READ_ONLY

__all__ = ["METHOD_ROUTE", "READ_ONLY_DEVICE_METHODS", "READ_VERBS", "permits"]

READ_VERBS = frozenset({"GET", "HEAD"})
METHOD_ROUTE = "/devices/{device_id}/methods/{method}"  # the direct-method route's path template
READ_ONLY_DEVICE_METHODS = frozenset({"logs"})


def permits(role: str, verb: str, route: str, params: Mapping[str, str]) -> bool:
    """Whether a token of ``role`` may call ``verb route`` (``route`` is the path template, e.g.
    ``/devices/{device_id}``; ``params`` its values). Unknown roles may do nothing."""
    if role == OPERATOR:
        return True
    if role != READ_ONLY:
        return False
    if verb.upper() in READ_VERBS:
        return True
    return verb.upper() == "POST" and route == METHOD_ROUTE and params.get("method") in READ_ONLY_DEVICE_METHODS
