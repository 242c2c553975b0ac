"""Re-evaluation in batches: many devices, one store transaction and one publish per batch, same documents."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hub_world import HubWorld
from sqlalchemy import bindparam, text

from edgeship.agent.decide import accept_document
from edgeship.deployment import DeploymentDocument, build_document, sign_document
from edgeship.errors import InputError
from edgeship.hub.errors import AlreadyExistsError
from edgeship.hub.issuer import DocumentGroup
from edgeship.hub.services import HubServices, ModuleRefSpec, Outgoing
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, verify_envelope

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def batches(tmp_path: Path) -> tuple[HubWorld, HubServices, list[list[Outgoing]]]:
    world = HubWorld(tmp_path)
    calls = world.link.batches  # each batch the services handed to the link
    hub = world.services(f"sqlite:///{tmp_path / 'hub.db'}", clock=lambda: T0, batch=3)
    hub.catalog.upload_module(world.module("digits", 1))
    hub.catalog.upload_module(world.module("metrics", 1))
    for i in range(8):
        hub.fleet.create_device(f"dev-{i}", {"site": "lab" if i % 2 else "home"})
    calls.clear()
    return world, hub, calls


def test_a_deployment_is_published_in_batches_of_documents_each_device_accepts(
    batches: tuple[HubWorld, HubServices, list[list[Outgoing]]],
) -> None:
    world, hub, calls = batches
    hub.deployments.create_deployment("all", "*", [ModuleRefSpec("digits", 1, {"port": 5001})])
    hub.deployments.create_deployment("lab", "tags.site = 'lab'", [ModuleRefSpec("metrics", 1)], priority=5)
    first, second = calls[:3], calls[3:]
    assert [len(b) for b in first] == [3, 3, 2] and [len(b) for b in second] == [3, 1]  # only lab devices changed
    for doc in [o for batch in calls for o in batch]:
        accepted = accept_document(doc.envelope, world.trust_root(), doc.device_id, doc.sequence - 1, T0)
        assert accepted.sequence == doc.sequence
    lab = hub.fleet.get_device("dev-1").desired
    assert lab is not None and lab.deployments == ("all", "lab")


def test_the_fast_document_bytes_equal_the_validated_document(
    batches: tuple[HubWorld, HubServices, list[list[Outgoing]]],
) -> None:
    world, hub, calls = batches
    hub.deployments.create_deployment("all", "*", [ModuleRefSpec("digits", 1, {"restartPolicy": "always"})])
    for doc in calls[0]:
        payload = verify_envelope(doc.envelope, world.trust_root(), "hub", DEPLOYMENT_PAYLOAD_TYPE, now=T0)
        parsed = DeploymentDocument.from_bytes(payload)
        again = build_document(device_id=parsed.device_id, sequence=parsed.sequence, modules=parsed.modules,
                               deployments=parsed.deployments, issued_at=parsed.issued_at,
                               ttl=parsed.expires - parsed.issued_at)
        assert again.to_bytes() == payload


def test_reports_are_recorded_in_one_batch_and_bad_ones_are_refused_alone(
    batches: tuple[HubWorld, HubServices, list[list[Outgoing]]],
) -> None:
    _world, hub, _calls = batches
    stored, refused = hub.fleet.record_reported_many([
        ("dev-1", {"schemaVersion": 1, "deviceId": "dev-1", "lastAppliedSequence": 1, "status": {"code": 200}}),
        ("dev-2", {"deviceId": "dev-3"}),
        ("dev-3", ["not", "an", "object"]),  # type: ignore[list-item]
        ("ghost", {"schemaVersion": 1, "lastAppliedSequence": 1, "status": {"code": 200}}),
        ("bad/id", {"schemaVersion": 1, "status": {"code": 200}}),
        ("dev-2", {"schemaVersion": 1, "status": {"code": 200}, "extra": "x" * 100_000}),
    ])
    assert [r.device_id for r in stored] == ["dev-1"]
    assert [device for device, _why in refused] == ["dev-2", "dev-3", "bad/id", "dev-2", "ghost"]
    assert "names device 'dev-3'" in refused[0][1] and "No device 'ghost'" in refused[4][1]
    assert "field extra: Extra inputs are not permitted" in refused[3][1]
    assert hub.fleet.get_device("dev-1").reported is not None


def test_a_fleet_is_created_at_once_and_each_device_gets_its_first_document(
    batches: tuple[HubWorld, HubServices, list[list[Outgoing]]],
) -> None:
    _world, hub, calls = batches
    assert hub.fleet.create_devices([(f"fleet-{i}", {"site": "lab"}) for i in range(5)]) == 5
    assert [len(b) for b in calls] == [3, 2]
    assert all(o.sequence == 1 for batch in calls for o in batch)
    with pytest.raises(AlreadyExistsError, match="fleet-3"):
        hub.fleet.create_devices([("fleet-9", {}), ("fleet-3", {})])
    with pytest.raises(InputError):
        hub.fleet.create_devices([("fleet/10", {})])
    assert "fleet-9" not in {d.device.id for d in hub.fleet.list_devices()}


def test_a_document_group_signs_exactly_what_the_validated_path_signs(tmp_path: Path) -> None:
    world = HubWorld(tmp_path)
    hub = world.services(f"sqlite:///{tmp_path / 'hub.db'}")
    hub.catalog.upload_module(world.module("digits", 1))
    hub.deployments.create_deployment("all", "*",
                                      [ModuleRefSpec("digits", 1, {"port": 5001, "restartPolicy": "never"})])
    [deployment] = hub.issuing.layered()
    entries = {name: module[1] for name, module in deployment.modules.items()}
    group = DocumentGroup(entries, ["all"], "fp", issued_at=T0, ttl=timedelta(days=7), signers=[world.hub_key])
    for device_id, sequence in (("dev-a", 1), ("dev-b", 41), ("dev-a", 2)):
        text, issued, expires = group.sign(device_id, sequence)
        document = build_document(device_id=device_id, sequence=sequence, modules=entries, deployments=["all"],
                                  issued_at=T0, ttl=timedelta(days=7))
        expected = json.dumps(sign_document(document, [world.hub_key]).to_dict(), sort_keys=True,
                              separators=(",", ":"))
        assert (text, issued, expires) == (expected, document.issued_at, document.expires)


def test_a_large_fleet_signed_partly_on_worker_processes_gets_the_validated_bytes(tmp_path: Path) -> None:
    world = HubWorld(tmp_path)
    hub = world.services(f"sqlite:///{tmp_path / 'hub.db'}", clock=lambda: T0, batch=300)
    hub.catalog.upload_module(world.module("digits", 1))
    hub.fleet.create_devices([(f"dev-{i:04d}", {"site": "lab"}) for i in range(700)])
    world.link.clear()
    moved = {"dev-0001", "dev-0450", "dev-0699"}  # another issuer moved their counters after the batch was staged
    issue_many = hub.store.issue_many

    def racing(requests: Any, **kwargs: Any) -> Any:
        mine = [r.device_id for r in requests if r.device_id in moved]
        if mine:
            with hub.store.engine.begin() as conn:
                conn.execute(text("UPDATE devices SET last_sequence = last_sequence + 5 WHERE id IN :ids")
                             .bindparams(bindparam("ids", expanding=True)), {"ids": mine})
        return issue_many(requests, **kwargs)

    hub.store.issue_many = racing  # type: ignore[method-assign]
    hub.deployments.create_deployment("all", "*", [ModuleRefSpec("digits", 1, {"port": 5001})])
    docs = world.link.documents
    assert sorted(d.device_id for d in docs) == [f"dev-{i:04d}" for i in range(700)]
    for doc in docs:
        assert doc.sequence == (7 if doc.device_id in moved else 2)
        if doc.device_id not in moved and int(doc.device_id[4:]) % 20:
            continue  # the bytes of every 20th device and of each moved one are checked in full
        accepted = accept_document(doc.envelope, world.trust_root(), doc.device_id, 1, T0)
        assert accepted.sequence == doc.sequence
        payload = verify_envelope(doc.envelope, world.trust_root(), "hub", DEPLOYMENT_PAYLOAD_TYPE, now=T0)
        parsed = DeploymentDocument.from_bytes(payload)
        again = build_document(device_id=parsed.device_id, sequence=parsed.sequence, modules=parsed.modules,
                               deployments=parsed.deployments, issued_at=parsed.issued_at,
                               ttl=parsed.expires - parsed.issued_at)
        assert again.to_bytes() == payload
        assert json.loads(doc.envelope)["signatures"][0]["keyid"] == world.hub_key.keyid
