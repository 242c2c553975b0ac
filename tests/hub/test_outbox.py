"""The delivery outbox (ADR 0019): a change and its re-evaluation intent commit together; draining finishes it.

In-process, on SQLite and PostgreSQL. A crash between the commit and the documents is
played by committing the change through the store alone (what a killed hub leaves);
``tests/hub/test_hub_crash_delivery.py`` kills a real hub process at that point.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hub_world import HubWorld

from edgeship.hub.errors import AlreadyExistsError
from edgeship.hub.services import HubServices, ModuleRefSpec
from edgeship.hub.store import DeploymentRecord, IntentRecord, ModuleRefRecord
from edgeship.hub.store.outbox import merge

LAB = "tags.site = 'lab'"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path)


def _hub(world: HubWorld, url: str, devices: int = 5) -> HubServices:
    hub = world.services(url)
    hub.catalog.upload_module(world.module("digits", 1))
    hub.fleet.create_devices((f"dev-{i}", {"site": "lab"}) for i in range(devices))
    return hub


def _with_digits(hub: HubServices) -> set[str]:
    return {d.device_id for d in hub.store.latest_desired().values() if "lab" in d.deployments}


def test_every_change_that_can_alter_a_document_leaves_no_intent_once_it_returns(
    world: HubWorld, hub_url: str
) -> None:
    hub = _hub(world, hub_url)
    hub.fleet.create_device("dev-x", {"site": "home"})
    hub.fleet.update_tags("dev-x", {"site": "lab"})
    hub.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])
    hub.deployments.delete_deployment("lab")
    assert hub.issuing.outbox.pending() == []


def test_a_deployment_committed_without_its_documents_is_delivered_by_the_next_drain(
    world: HubWorld, hub_url: str
) -> None:
    hub = _hub(world, hub_url)
    world.published.clear()
    # What a hub killed right after the commit leaves: the deployment and its intent, no document.
    hub.store.add_deployment(DeploymentRecord("lab", LAB, 0, NOW, (ModuleRefRecord("digits", 1, {}),)))
    [intent] = hub.issuing.outbox.pending()
    assert intent.device_ids is None and _with_digits(hub) == set()

    restarted = world.services(hub_url)  # a new process over the same database
    assert restarted.issuing.drain_pending() == 5
    assert _with_digits(restarted) == {f"dev-{i}" for i in range(5)}
    assert sorted(o.device_id for o in world.published) == [f"dev-{i}" for i in range(5)]
    assert restarted.issuing.outbox.pending() == []
    with pytest.raises(AlreadyExistsError):  # a retried create still answers 409: the deployment exists
        restarted.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])


def test_draining_the_same_intent_twice_issues_no_document_twice(world: HubWorld, hub_url: str) -> None:
    hub = _hub(world, hub_url)
    hub.store.add_deployment(DeploymentRecord("lab", LAB, 0, NOW, (ModuleRefRecord("digits", 1, {}),)))
    first, second = world.services(hub_url), world.services(hub_url)
    pending = first.issuing.outbox.pending()
    assert first.issuing.drain_pending() == 5
    # A second hub that read the intent before the first finished it re-evaluates and finds nothing to issue.
    hub.issuing.outbox.add(pending[0].reason, None)
    assert second.issuing.drain_pending() == 0
    sequences = {d.device_id: d.sequence for d in hub.store.latest_desired().values()}
    assert sequences == {f"dev-{i}": 2 for i in range(5)}  # one document at creation, one for 'lab'


def test_a_re_tag_committed_without_its_document_is_delivered_by_the_next_drain(
    world: HubWorld, hub_url: str
) -> None:
    hub = _hub(world, hub_url)
    hub.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])
    hub.store.set_tags("dev-0", {"site": "home"})
    [intent] = hub.issuing.outbox.pending()
    assert intent.device_ids == ("dev-0",)
    assert "dev-0" in _with_digits(hub)
    assert hub.issuing.drain_pending() == 1
    assert "dev-0" not in _with_digits(hub)


def test_devices_created_without_their_first_document_get_it_from_the_next_drain(
    world: HubWorld, hub_url: str
) -> None:
    hub = _hub(world, hub_url, devices=0)
    hub.store.add_devices([("dev-a", {}), ("dev-b", {})], NOW)
    assert hub.store.latest_desired() == {}
    assert hub.issuing.drain_pending() == 2
    assert set(hub.store.latest_desired()) == {"dev-a", "dev-b"}


def test_an_intent_committed_while_a_drain_runs_is_not_finished_by_it(world: HubWorld, hub_url: str) -> None:
    hub = _hub(world, hub_url)
    hub.store.set_tags("dev-0", {"site": "home"})
    work = merge(hub.issuing.outbox.pending())
    assert work is not None
    hub.store.set_tags("dev-1", {"site": "home"})  # committed after the drain read its intents
    assert hub.issuing.outbox.finish(work.intent_ids) == 1
    assert [i.device_ids for i in hub.issuing.outbox.pending()] == [("dev-1",)]


def test_a_failed_re_evaluation_keeps_its_intent_for_the_next_drain(world: HubWorld, hub_url: str) -> None:
    hub = _hub(world, hub_url)

    world.link.failure = RuntimeError("publisher failed")
    with pytest.raises(RuntimeError):
        hub.deployments.create_deployment("lab", LAB, [ModuleRefSpec("digits", 1)])
    assert len(hub.issuing.outbox.pending()) == 1
    world.link.failure = None
    hub.issuing.drain_pending()
    assert hub.issuing.outbox.pending() == []
    assert _with_digits(hub) == {f"dev-{i}" for i in range(5)}


def test_merging_intents_takes_the_union_of_their_devices_and_all_when_any_says_all() -> None:
    def intent(i: int, ids: tuple[str, ...] | None, force: bool = False) -> IntentRecord:
        return IntentRecord(i, "r", ids, force, NOW)

    assert merge([]) is None
    some = merge([intent(1, ("b", "a")), intent(2, ("a", "c"))])
    assert some is not None and some.device_ids == ("a", "b", "c") and some.intent_ids == (1, 2) and not some.force
    everyone = merge([intent(1, ("a",)), intent(2, None), intent(3, ("z",), force=True)])
    assert everyone is not None and everyone.device_ids is None and everyone.force


def test_a_forced_intent_left_by_a_rotation_re_signs_every_device_at_the_next_drain(
    world: HubWorld, hub_url: str
) -> None:
    hub = _hub(world, hub_url)
    before = {d.device_id: d.sequence for d in hub.store.latest_desired().values()}
    # What a rotation killed before its re-sign leaves:
    hub.issuing.outbox.add("trust root v2 re-sign", None, force=True)
    assert world.services(hub_url).issuing.drain_pending() == 5
    after = {d.device_id: d.sequence for d in hub.store.latest_desired().values()}
    assert after == {device: sequence + 1 for device, sequence in before.items()}
    assert hub.issuing.outbox.pending() == []
