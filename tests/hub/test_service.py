"""The hub's service layer: targeting by tags, layering, signed documents, status. No transport."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hub_world import HubWorld

from edgeship.agent.decide import accept_document
from edgeship.errors import InputError, ManifestError, SignatureError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services import HubServices, ModuleRefSpec, Outgoing
from edgeship.hub.targeting import TargetConditionError
from edgeship.signing import Signer, TrustRoot

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
LAB = "tags.site = 'lab'"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _service(world: HubWorld, url: str, clock: Clock) -> HubServices:
    return world.services(url, clock=clock)


@pytest.fixture
def hub(world: HubWorld, tmp_path: Path, clock: Clock) -> HubServices:
    service = _service(world, f"sqlite:///{tmp_path / 'hub.db'}", clock)
    for name, version in (("digits", 1), ("digits", 2), ("metrics", 1)):
        service.catalog.upload_module(world.module(name, version))
    return service


def _modules(world: HubWorld, hub: HubServices, device_id: str, clock: Clock) -> dict[str, int]:
    """What the device's newest document asks for, after the agent's own acceptance checks."""
    desired = hub.fleet.get_device(device_id).desired
    assert desired is not None
    accepted = accept_document(desired.envelope.encode(), world.trust_root(), device_id, None, clock())
    return {name: manifest.version for name, manifest in accepted.manifests.items()}


def _last(world: HubWorld, device_id: str) -> Outgoing:
    return [o for o in world.published if o.device_id == device_id][-1]


def test_devices_join_and_leave_a_deployment_when_their_tags_change(
    world: HubWorld, hub_url: str, clock: Clock
) -> None:
    hub = _service(world, hub_url, clock)
    hub.catalog.upload_module(world.module("digits", 1))
    hub.fleet.create_device("dev-1", {"site": "lab"})
    hub.fleet.create_device("dev-2", {"site": "home"})
    hub.deployments.create_deployment("lab-digits", LAB, [ModuleRefSpec("digits", 1)])
    assert _modules(world, hub, "dev-1", clock) == {"digits": 1}
    assert _modules(world, hub, "dev-2", clock) == {}

    hub.fleet.update_tags("dev-2", {"site": "lab"})
    assert _modules(world, hub, "dev-2", clock) == {"digits": 1}
    hub.fleet.update_tags("dev-1", {"site": "home"})
    assert _modules(world, hub, "dev-1", clock) == {}
    assert [o.sequence for o in world.published if o.device_id == "dev-1"] == [1, 2, 3]


def test_the_higher_priority_layer_wins_per_module_name(world: HubWorld, hub: HubServices, clock: Clock) -> None:
    hub.fleet.create_device("dev-1", {"site": "lab", "ring": "canary"})
    hub.fleet.create_device("dev-2", {"site": "lab"})
    hub.deployments.create_deployment("base", "*", [ModuleRefSpec("digits", 1), ModuleRefSpec("metrics", 1)],
                                      priority=0)
    hub.deployments.create_deployment("canary", "tags.ring = 'canary'", [ModuleRefSpec("digits", 2)], priority=10)
    assert _modules(world, hub, "dev-1", clock) == {"digits": 2, "metrics": 1}
    assert _modules(world, hub, "dev-2", clock) == {"digits": 1, "metrics": 1}
    assert hub.fleet.get_device("dev-1").desired.deployments == ("base", "canary")  # type: ignore[union-attr]


def test_on_equal_priority_the_newer_deployment_wins(world: HubWorld, hub: HubServices, clock: Clock) -> None:
    hub.fleet.create_device("dev-1", {"site": "lab"})
    hub.deployments.create_deployment("old", LAB, [ModuleRefSpec("digits", 2)])
    clock.advance(seconds=1)
    hub.deployments.create_deployment("new", LAB, [ModuleRefSpec("digits", 1)])
    assert _modules(world, hub, "dev-1", clock) == {"digits": 1}
    hub.deployments.delete_deployment("new")
    assert _modules(world, hub, "dev-1", clock) == {"digits": 2}


def test_nothing_is_published_when_the_module_set_does_not_change(
    world: HubWorld, hub: HubServices, clock: Clock
) -> None:
    hub.fleet.create_device("dev-1", {"site": "lab"})
    hub.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])
    count = len(world.published)
    hub.fleet.update_tags("dev-1", {"site": "lab", "owner": "ana"})
    assert hub.issuing.reevaluate() == []
    assert len(world.published) == count


def test_documents_are_reissued_after_half_their_time_to_live(world: HubWorld, hub: HubServices, clock: Clock) -> None:
    hub.fleet.create_device("dev-1", {})
    assert hub.issuing.reevaluate() == []
    clock.advance(days=3, hours=12)
    again = hub.issuing.reevaluate()
    assert [(o.device_id, o.sequence) for o in again] == [("dev-1", 2)]


def test_documents_verify_on_the_device_and_carry_sequence_expiry_and_settings(
    world: HubWorld, hub: HubServices, clock: Clock
) -> None:
    hub.fleet.create_device("dev-1", {"site": "lab"})
    hub.deployments.create_deployment("lab", LAB,
                                      [ModuleRefSpec("digits", 1, {"port": 5002, "restartPolicy": "always"})])
    out = _last(world, "dev-1")
    accepted = accept_document(out.envelope, world.trust_root(), "dev-1", 1, clock())
    doc = accepted.document
    assert doc.sequence == out.sequence == 2
    assert doc.expires - doc.issued_at == timedelta(days=7)
    entry = doc.modules["digits"]
    assert (entry.settings.port, entry.settings.restart_policy) == (5002, "always")
    assert hub.catalog.blob_file(entry.blobs.bundle.removeprefix("/blobs/")).is_file()
    assert entry.blobs.image is not None

    stranger = Signer.generate(name="other-hub")
    other_root = TrustRoot.build(root=[world.root_key.public_key], release=[world.release.public_key],
                                 hub=[stranger.public_key])
    with pytest.raises(SignatureError):
        accept_document(out.envelope, other_root, "dev-1", None, clock())


def test_uploads_verify_the_release_signature_and_artifacts(world: HubWorld, hub: HubServices) -> None:
    again = hub.catalog.upload_module(world.module("digits", 1))
    assert again.ref == "digits:1"
    rogue = world.module("rogue", 1, signer=Signer.generate(name="not-release"))
    with pytest.raises(SignatureError):
        hub.catalog.upload_module(rogue)
    tampered = world.module("tampered", 1)
    (tampered / "bundle.tar").write_bytes(b"evil")
    with pytest.raises(ManifestError, match=r"bundle\.tar"):
        hub.catalog.upload_module(tampered)
    assert [m.ref for m in hub.catalog.list_modules()] == ["digits:1", "digits:2", "metrics:1"]


def test_upload_from_a_packaging_workspace(world: HubWorld, hub: HubServices, workspace) -> None:  # type: ignore[no-untyped-def]
    from edgeship.modules.manifest import MANIFEST_FILE, ModuleManifest
    from edgeship.modules.store import ModuleStore

    modules = ModuleStore(workspace)
    version = modules.reserve("vision")
    built = world.module("vision", version)
    modules.commit(ModuleManifest.from_bytes((built / MANIFEST_FILE).read_bytes()), built, "sha256:" + "0" * 64)
    assert hub.catalog.upload_from_workspace(workspace.root, "vision").ref == "vision:1"


def test_bad_deployments_are_input_errors_that_say_what_is_wrong(hub: HubServices) -> None:
    with pytest.raises(TargetConditionError, match="column"):
        hub.deployments.create_deployment("bad", "tags.site = 'lab' AND (", [ModuleRefSpec("digits", 1)])
    with pytest.raises(HubNotFoundError, match="digits:9"):
        hub.deployments.create_deployment("missing", "*", [ModuleRefSpec("digits", 9)])
    with pytest.raises(InputError, match="restartPolicy"):
        hub.deployments.create_deployment("settings", "*", [ModuleRefSpec("digits", 1, {"restartPolicy": "sometimes"})])
    with pytest.raises(InputError, match="twice"):
        hub.deployments.create_deployment("twice", "*", [ModuleRefSpec("digits", 1), ModuleRefSpec("digits", 2)])
    with pytest.raises(InputError, match="Device id"):
        hub.fleet.create_device("a/b")
    with pytest.raises(InputError, match="Tag name"):
        hub.fleet.create_device("dev-9", {"bad name": 1})
    assert hub.deployments.list_deployments() == []


def test_deployment_status_counts_targeted_applied_success_and_failure(
    world: HubWorld, hub: HubServices, clock: Clock
) -> None:
    for n, tags in enumerate([{"site": "lab"}, {"site": "lab"}, {"site": "lab", "ring": "canary"}, {"site": "x"}]):
        hub.fleet.create_device(f"dev-{n}", tags)
    hub.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])
    hub.deployments.create_deployment("canary", "tags.ring = 'canary'", [ModuleRefSpec("digits", 2)], priority=5)
    clock.advance(seconds=5)
    ok = {"code": 200, "description": "ok"}
    hub.fleet.record_reported("dev-0", {"schemaVersion": 1, "deviceId": "dev-0", "lastAppliedSequence": 2,
                                        "status": ok})
    failed = {"code": 500, "description": "failed: health_check of digits.b failed"}
    hub.fleet.record_reported("dev-1", {"schemaVersion": 1, "deviceId": "dev-1", "lastAppliedSequence": 2,
                                  "status": failed})
    status = hub.deployments.deployment_status("lab")
    assert status.counts() == {"targeted": 3, "applied": 2, "reportingSuccess": 1, "reportingFailure": 1}
    states = {d.device_id: (d.state, d.reason) for d in status.devices}
    assert states == {
        "dev-0": ("applied", None),
        "dev-1": ("failed", "failed: health_check of digits.b failed"),
        "dev-2": ("overridden", None),
    }
    with pytest.raises(InputError, match="names device"):
        hub.fleet.record_reported("dev-0", {"deviceId": "dev-1"})
    assert json.loads(_last(world, "dev-2").envelope)["payloadType"] == "application/vnd.edgeship.deployment+json"


def test_a_refused_document_is_a_failure_with_the_devices_reason(hub: HubServices, clock: Clock) -> None:
    hub.fleet.create_device("dev-1", {"site": "lab"})
    hub.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])
    assert [d.state for d in hub.deployments.deployment_status("lab").devices] == ["pending"]
    clock.advance(seconds=1)
    refused = {"code": 401, "description": "bad signature", "message": "unknown key 3f2a…"}
    hub.fleet.record_reported("dev-1", {"schemaVersion": 1, "lastAppliedSequence": 1, "status": refused})
    status = hub.deployments.deployment_status("lab")
    assert status.reporting_failure == 1
    device = status.devices[0]
    assert (device.state, device.code, device.reason) == ("failed", 401, refused["message"])


def test_the_public_surface_resolves() -> None:
    import importlib

    for name in ("edgeship.hub.store", "edgeship.hub.services", "edgeship.hub.status", "edgeship.hub.errors",
                 "edgeship.hub.api"):
        module = importlib.import_module(name)
        assert all(hasattr(module, member) for member in module.__all__), name
