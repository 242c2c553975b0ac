"""A deployment's status read as columns (``services/status_columns.py``) says what the record read says.

On SQLite and a real PostgreSQL: devices in every state the status knows (applied, failed
with code 500, in progress with code 202, refused after the document was issued, a refusal older than the document,
an older document, never reported, overridden by a higher-priority deployment), and the
pure ``deployment_status`` over the store's full records (documents with their envelopes,
report objects: the read used before) is compared field by field with the service's answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from hub_world import HubWorld

from edgeship.hub.services import HubServices, ModuleRefSpec
from edgeship.hub.services.rules import parsed_condition
from edgeship.hub.services.status_columns import StatusColumns
from edgeship.hub.status import deployment_status


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def _record_read(hub: HubServices, deployment_id: str):  # type: ignore[no-untyped-def]
    record = hub.store.get_deployment(deployment_id)
    return deployment_status(record.id, parsed_condition(record.target_condition), hub.store.list_devices(),
                             hub.store.latest_desired(), hub.store.reported(), held=hub.rollouts.held(record.id))


def test_the_column_read_gives_the_record_reads_answers_on_each_backend(hub_url: str, tmp_path: Path) -> None:
    clock = Clock()
    world = HubWorld(tmp_path / "world")
    world.root.mkdir(parents=True)
    hub = world.services(hub_url, clock=clock)
    hub.catalog.upload_module(world.module("digits", 1))
    hub.catalog.upload_module(world.module("digits", 2))
    hub.fleet.create_devices([(f"dev-{n}", {"site": "lab", "ring": "canary" if n == 7 else "main", "n": n})
                              for n in range(8)] + [("other", {"site": "field"})])
    clock.now += timedelta(minutes=1)
    hub.deployments.create_deployment("lab", "tags.site = 'lab'", [ModuleRefSpec("digits", 1)])
    hub.deployments.create_deployment("canary", "tags.ring = 'canary'", [ModuleRefSpec("digits", 2)], priority=5)
    sequence = {d.id: d.last_sequence for d in hub.store.list_devices()}
    clock.now += timedelta(minutes=1)

    def report(device: str, applied: int, code: int, message: str = "") -> None:
        hub.fleet.record_reported(device, {"schemaVersion": 1, "lastAppliedSequence": applied,
                                           "status": {"code": code, "description": "d", "message": message}})

    report("dev-0", sequence["dev-0"], 200)
    report("dev-1", sequence["dev-1"], 500, "health_check of digits failed")
    report("dev-2", sequence["dev-2"] - 1, 401, "unknown key")  # refused, after the newest document: failed
    report("dev-4", sequence["dev-4"] - 1, 200)  # an older document: pending
    report("dev-5", sequence["dev-5"], 202, "download of digits.b waits")  # in progress (ADR 0042): pending
    clock.now -= timedelta(minutes=30)
    report("dev-3", sequence["dev-3"] - 1, 401, "too old")  # a refusal older than the newest document: pending
    clock.now += timedelta(minutes=31)
    report("dev-7", sequence["dev-7"], 200)  # runs the canary deployment: overridden for lab

    status = hub.deployments.deployment_status("lab")
    assert status.counts() == {"targeted": 8, "applied": 7, "reportingSuccess": 1, "reportingFailure": 2}
    assert {d.device_id: (d.state, d.reason) for d in status.devices} == {
        "dev-0": ("applied", None), "dev-1": ("failed", "health_check of digits failed"),
        "dev-2": ("failed", "unknown key"), "dev-3": ("pending", None), "dev-4": ("pending", None),
        "dev-5": ("pending", "download of digits.b waits"), "dev-6": ("pending", None), "dev-7": ("overridden", None),
    }
    assert status == _record_read(hub, "lab")
    assert hub.deployments.deployment_status("canary") == _record_read(hub, "canary")
    both = hub.deployments.list_deployments()  # the dashboard's list: one read of the fleet for every deployment
    assert hub.deployments.statuses(both) == [_record_read(hub, r.id) for r in both] and len(both) == 2

    columns = StatusColumns(hub.store)
    newest, records = columns.newest(), hub.store.latest_desired()
    assert {d: (n.sequence, n.deployments, n.issued) for d, n in newest.items()} == {
        d: (r.sequence, r.deployments, r.issued) for d, r in records.items()}
    assert all(n.issued.tzinfo is not None for n in newest.values())
    assert {d: (r.state, r.received) for d, r in columns.reports().items()} == {
        d: (r.state, r.received) for d, r in hub.store.reported().items()}
    hub.store.close()  # type: ignore[attr-defined]
