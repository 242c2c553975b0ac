"""The hub's persistent state: devices, modules, deployments, signed documents, reported state, tokens.

SQLAlchemy 2.0 over SQLite (embedded default, ``hub.db`` in the workspace) or
PostgreSQL (``postgresql+psycopg://...``) for scale. Callers get frozen records,
never ORM objects. Opening a store upgrades its database to the newest schema
(``schema.py``, revisions in ``edgeship.hub.migrations``).
"""

from __future__ import annotations

from edgeship.hub.store.credentials import CredentialRecord, CredentialStore  # registers its table
from edgeship.hub.store.history import Aggregate, TelemetryHistory  # registers its table
from edgeship.hub.store.outbox import IntentRecord, Outbox, PendingWork
from edgeship.hub.store.replicas import ReplicaTable  # registers its table
from edgeship.hub.store.rollouts import (
    RolloutDeviceRecord,
    RolloutEventRecord,
    RolloutRecord,
    RolloutStart,
    RolloutStore,
)
from edgeship.hub.store.store import (
    DeploymentRecord,
    DesiredRecord,
    DeviceRecord,
    HubStore,
    HubStoreError,
    IssueRequest,
    ModuleRecord,
    ModuleRefRecord,
    ReportedRecord,
    sqlite_url,
)
from edgeship.hub.store.telemetry import PresenceRecord, TelemetryRecord, TelemetryStore  # registers its tables
from edgeship.hub.store.tokens import ROLES, TokenRecord, TokenStore

__all__ = [
    "ROLES",
    "Aggregate",
    "CredentialRecord",
    "CredentialStore",
    "DeploymentRecord",
    "DesiredRecord",
    "DeviceRecord",
    "HubStore",
    "HubStoreError",
    "IntentRecord",
    "IssueRequest",
    "ModuleRecord",
    "ModuleRefRecord",
    "Outbox",
    "PendingWork",
    "PresenceRecord",
    "ReplicaTable",
    "ReportedRecord",
    "RolloutDeviceRecord",
    "RolloutEventRecord",
    "RolloutRecord",
    "RolloutStart",
    "RolloutStore",
    "TelemetryHistory",
    "TelemetryRecord",
    "TelemetryStore",
    "TokenRecord",
    "TokenStore",
    "sqlite_url",
]
