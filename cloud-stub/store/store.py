"""``HubStore``: the hub's persistent state behind plain records, on SQLite or PostgreSQL.

One facade over the table families, so callers hold one object and one engine:

- ``engine.py``: the engine, ``BEGIN IMMEDIATE`` on SQLite, one short transaction per call;
- ``devices.py``: devices and their tags;
- ``catalog.py``: modules and deployments;
- ``documents.py``: signed desired documents and their per-device sequences;
- ``reported.py``: each device's newest report.

Tokens, the outbox, telemetry/presence and credentials are small stores of their own
(``tokens.py``, ``outbox.py``, ``telemetry.py``, ``credentials.py``) over the same
``HubStore``. The service layer never sees an ORM object: every method opens its own
short transaction and returns frozen records (``records.py``).

Every change that can alter what a device must run (a device added or re-tagged, a
deployment added or deleted) records a re-evaluation intent in the same transaction
(``outbox.py``, ADR 0019): the change and the promise to deliver it commit together.
"""

from __future__ import annotations

from edgeship.hub.store.catalog import CatalogTables
from edgeship.hub.store.devices import DeviceTables
from edgeship.hub.store.documents import DocumentTables
from edgeship.hub.store.engine import HubStoreError, sqlite_url
from edgeship.hub.store.records import (
    DeploymentRecord,
    DesiredRecord,
    DeviceRecord,
    IssueRequest,
    ModuleRecord,
    ModuleRefRecord,
    ReportedRecord,
)
from edgeship.hub.store.reported import ReportedTables

__all__ = [
    "DeploymentRecord",
    "DesiredRecord",
    "DeviceRecord",
    "HubStore",
    "HubStoreError",
    "IssueRequest",
    "ModuleRecord",
    "ModuleRefRecord",
    "ReportedRecord",
    "sqlite_url",
]


class HubStore(DeviceTables, CatalogTables, DocumentTables, ReportedTables):
    """The hub's tables over one engine URL (``sqlite:///...`` or ``postgresql+psycopg://...``).

    Opening it upgrades the database to the newest schema first (``schema.upgrade``);
    ``upgraded_from`` is the revision it found (``"none"``: empty or made before migrations).
    """
