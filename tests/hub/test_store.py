"""HubStore against both backends: SQLite (embedded default) and a real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text

from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError
from edgeship.hub.store import DeploymentRecord, HubStore, IssueRequest, ModuleRecord, ModuleRefRecord
from edgeship.hub.store.models import Base
from edgeship.hub.store.telemetry import TelemetryStore

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def store(hub_url: str) -> HubStore:
    return HubStore(hub_url)


def _module(name: str = "digits", version: int = 1, manifest: str = DIGEST) -> ModuleRecord:
    return ModuleRecord(name, version, {"payloadType": "x", "payload": "", "signatures": []}, manifest,
                        "sha256:" + "b" * 64, None, "fp32", T0)


def _signer(envelope: str = "{}") -> object:
    return lambda sequence: (f"{envelope}#{sequence}", T0, T0 + timedelta(days=7))


def test_devices_are_added_retagged_and_listed(store: HubStore) -> None:
    store.add_device("dev-2", {"site": "lab"}, T0)
    store.add_device("dev-1", {"site": "home", "location": {"floor": 3}}, T0)
    assert store.set_tags("dev-2", {"site": "home"}).tags == {"site": "home"}
    assert [d.id for d in store.list_devices()] == ["dev-1", "dev-2"]
    assert store.get_device("dev-1").tags["location"] == {"floor": 3}
    assert store.get_device("dev-1").created == T0  # aware UTC on both backends
    assert [d.id for d in store.list_devices(["dev-2"])] == ["dev-2"]


def test_duplicate_and_missing_devices_are_named_errors(store: HubStore) -> None:
    store.add_device("dev-1", {}, T0)
    with pytest.raises(AlreadyExistsError, match="dev-1"):
        store.add_device("dev-1", {}, T0)
    with pytest.raises(HubNotFoundError, match="ghost"):
        store.set_tags("ghost", {})


def test_modules_are_idempotent_by_manifest_digest(store: HubStore) -> None:
    _, new = store.add_module(_module())
    assert new
    _, again = store.add_module(_module())
    assert not again
    with pytest.raises(AlreadyExistsError, match="different manifest"):
        store.add_module(_module(manifest="sha256:" + "c" * 64))
    assert store.has_blob("sha256:" + "b" * 64)
    assert not store.has_blob("sha256:" + "d" * 64)
    assert [m.ref for m in store.list_modules()] == ["digits:1"]


def test_deployments_reference_stored_modules_and_delete_with_their_refs(store: HubStore) -> None:
    store.add_module(_module())
    refs = (ModuleRefRecord("digits", 1, {"port": 5001}),)
    with pytest.raises(HubNotFoundError, match="digits:2"):
        store.add_deployment(DeploymentRecord("lab", "*", 1, T0, (ModuleRefRecord("digits", 2, {}),)))
    store.add_deployment(DeploymentRecord("lab", "tags.site = 'lab'", 10, T0, refs))
    with pytest.raises(AlreadyExistsError):
        store.add_deployment(DeploymentRecord("lab", "*", 1, T0, refs))
    shown = store.get_deployment("lab")
    assert (shown.priority, shown.modules, shown.created) == (10, refs, T0)
    store.delete_deployment("lab")
    assert store.list_deployments() == []
    with pytest.raises(HubNotFoundError):
        store.delete_deployment("lab")


def test_issue_allocates_the_next_sequence_only_when_the_fingerprint_changes(store: HubStore) -> None:
    store.add_device("dev-1", {}, T0)
    first = store.issue("dev-1", "A", ["lab"], _signer())
    assert first is not None and first.sequence == 1 and first.deployments == ("lab",)
    assert store.issue("dev-1", "A", ["lab"], _signer()) is None
    second = store.issue("dev-1", "B", [], _signer())
    assert second is not None and second.sequence == 2
    refreshed = store.issue("dev-1", "B", [], _signer(), reissue_before=T0 + timedelta(seconds=1))
    assert refreshed is not None and refreshed.sequence == 3
    assert store.latest_desired()["dev-1"].sequence == 3
    assert store.get_device("dev-1").last_sequence == 3


def test_concurrent_issues_never_reuse_a_sequence(store: HubStore) -> None:
    store.add_device("dev-1", {}, T0)
    got: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(8):
            issued = store.issue("dev-1", f"{n}-{i}", [], _signer())
            assert issued is not None
            with lock:
                got.append(issued.sequence)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 49))
    assert store.latest_desired(["dev-1"])["dev-1"].sequence == 48


def test_reported_state_is_the_newest_report_per_device(store: HubStore) -> None:
    store.add_device("dev-1", {}, T0)
    store.put_reported("dev-1", {"lastAppliedSequence": 1}, T0)
    store.put_reported("dev-1", {"lastAppliedSequence": 2}, T0 + timedelta(seconds=5))
    assert store.reported()["dev-1"].state == {"lastAppliedSequence": 2}
    with pytest.raises(HubNotFoundError):
        store.put_reported("ghost", {}, T0)


def test_a_report_of_an_older_document_stored_last_does_not_replace_a_newer_one(store: HubStore) -> None:
    """Two replicas share a device's reports; the one holding its report of document 1 stores it after the other
    stored its report of document 2 (the replica kill test's stalled wave). Same sequence: the last stored wins."""
    store.add_device("dev-1", {}, T0)
    store.add_device("dev-2", {}, T0)
    store.put_reported_many([("dev-1", {"lastAppliedSequence": 2, "n": 1}, T0)])
    store.put_reported_many([("dev-1", {"lastAppliedSequence": 1}, T0 + timedelta(seconds=1)),
                             ("dev-2", {"lastAppliedSequence": 1}, T0 + timedelta(seconds=1))])
    assert store.reported()["dev-1"].state == {"lastAppliedSequence": 2, "n": 1}
    assert store.reported()["dev-1"].received == T0
    assert store.reported()["dev-2"].state == {"lastAppliedSequence": 1}
    store.put_reported("dev-1", {"lastAppliedSequence": 1}, T0 + timedelta(seconds=2))
    assert store.reported()["dev-1"].state == {"lastAppliedSequence": 2, "n": 1}
    store.put_reported_many([("dev-1", {"lastAppliedSequence": 2, "n": 2}, T0 + timedelta(seconds=3))])
    assert store.reported()["dev-1"].state == {"lastAppliedSequence": 2, "n": 2}
    store.put_reported_many([("dev-1", {"status": {"code": 200}}, T0 + timedelta(seconds=4))])  # no sequence to compare
    assert store.reported()["dev-1"].state == {"status": {"code": 200}}


def test_a_lower_sequence_under_a_newer_trust_root_replaces_the_report_and_a_stale_one_does_not(
    store: HubStore,
) -> None:
    """A stolen hub key pushed dev-1's floor to 2**20 + 1; the hub-key rotation (trust root 2) voids it and the
    device applies sequence 2 (tests/e2e/test_fleet_trust_rotation). That report is the newer one; a report from
    before the rotation stored after it is not."""
    store.add_device("dev-1", {}, T0)
    pushed = {"lastAppliedSequence": 2**20 + 1, "trustRootVersion": 1}
    recovered = {"lastAppliedSequence": 2, "trustRootVersion": 2}
    store.put_reported("dev-1", pushed, T0)
    store.put_reported_many([("dev-1", recovered, T0 + timedelta(seconds=1))])
    assert store.reported()["dev-1"].state == recovered
    store.put_reported_many([("dev-1", pushed, T0 + timedelta(seconds=2))])  # stale, from before the rotation
    assert store.reported()["dev-1"].state == recovered
    store.put_reported("dev-1", {"lastAppliedSequence": 1}, T0 + timedelta(seconds=3))  # no root: the sequence decides
    assert store.reported()["dev-1"].state == recovered
    # the rotation reached the device before its new document: it refused a document under root 2 with the old floor
    refused = {"lastAppliedSequence": 2**20 + 1, "trustRootVersion": 2, "status": {"code": 401}}
    store.add_device("dev-2", {}, T0)
    store.put_reported("dev-2", refused, T0)
    store.put_reported_many([("dev-2", recovered, T0 + timedelta(seconds=1))])
    assert store.reported()["dev-2"].state == recovered


def _report(code: int, number: int | None = None, sequence: int = 7) -> dict[str, object]:
    report: dict[str, object] = {"lastAppliedSequence": sequence, "trustRootVersion": 1, "status": {"code": code}}
    return report if number is None else {**report, "reportNumber": number}


def test_a_202_stored_after_the_200_that_followed_it_does_not_replace_it(store: HubStore) -> None:
    """Two replicas share a device's reports of one document: its 202 ("waiting for the download host") reaches the
    database after the 200 that followed it. The agent's reportNumber orders them (ADR 0037, ninth session)."""
    store.add_device("dev-1", {}, T0)
    waiting, applied = _report(202, 5), _report(200, 6)
    store.put_reported_many([("dev-1", applied, T0)])
    store.put_reported_many([("dev-1", waiting, T0 + timedelta(seconds=1))])
    assert store.reported()["dev-1"].state == applied and store.reported()["dev-1"].received == T0
    store.put_reported("dev-1", waiting, T0 + timedelta(seconds=2))
    assert store.reported()["dev-1"].state == applied
    again = _report(200, 6)  # the same report sent again on a reconnect replaces it
    store.put_reported("dev-1", again, T0 + timedelta(seconds=3))
    assert store.reported()["dev-1"].received == T0 + timedelta(seconds=3)
    failed = _report(500, 7)
    store.put_reported_many([("dev-1", failed, T0 + timedelta(seconds=4))])
    assert store.reported()["dev-1"].state == failed
    # a refusal of a newer document keeps the sequence: ordered by number too, not replaced by the older 200
    refused = _report(409, 8)
    store.put_reported("dev-1", refused, T0 + timedelta(seconds=5))
    store.put_reported("dev-1", _report(200, 6), T0 + timedelta(seconds=6))
    assert store.reported()["dev-1"].state == refused
    # the next document's report wins whatever its number (an agent's counter started again from the clock)
    store.put_reported("dev-1", _report(200, 1, sequence=8), T0 + timedelta(seconds=7))
    assert store.reported()["dev-1"].state == _report(200, 1, sequence=8)


def test_report_numbers_up_to_2_53_compare_as_integers(store: HubStore) -> None:
    """Past 2**31 (PostgreSQL's INTEGER): a counter started from the clock in ms is about 1.8e12."""
    store.add_device("dev-1", {}, T0)
    newest = _report(200, 2**53)
    store.put_reported("dev-1", newest, T0)
    store.put_reported_many([("dev-1", _report(202, 2**53 - 1), T0 + timedelta(seconds=1))])
    store.put_reported_many([("dev-1", _report(202, 2**31), T0 + timedelta(seconds=2))])
    assert store.reported()["dev-1"].state == newest


def test_a_report_without_a_number_orders_as_before_within_one_document(store: HubStore) -> None:
    """Older agents send no reportNumber, and rows stored before it have none: within one document the last stored
    wins, whichever side lacks it; a stored refusal is replaced by any report; a sequence never goes back."""
    store.add_device("dev-1", {}, T0)
    store.put_reported("dev-1", _report(200, 6), T0)
    store.put_reported("dev-1", _report(202), T0 + timedelta(seconds=1))  # the new one has no number
    assert store.reported()["dev-1"].state == _report(202)
    store.put_reported_many([("dev-1", _report(500, 3), T0 + timedelta(seconds=2))])  # the stored one has none
    assert store.reported()["dev-1"].state == _report(500, 3)
    store.put_reported("dev-1", _report(409), T0 + timedelta(seconds=3))
    store.put_reported("dev-1", _report(200, 2), T0 + timedelta(seconds=4))
    assert store.reported()["dev-1"].state == _report(200, 2)
    store.put_reported("dev-1", _report(200, 99, sequence=6), T0 + timedelta(seconds=5))  # an older document
    assert store.reported()["dev-1"].state == _report(200, 2)


def test_two_replicas_storing_a_first_report_at_once_both_succeed_and_the_later_wins(hub_url: str) -> None:
    """Replica A's transaction inserted dev-1's first report and has not committed; replica B stores one too.

    B waits for A's row (PostgreSQL: the unique index; SQLite: the write lock), then updates it: one upsert,
    no unique violation (seen in the replica kill test when B read "no row" and inserted).
    """
    first, second = HubStore(hub_url), HubStore(hub_url)
    try:
        first.add_device("dev-1", {}, T0)
        reported = insert(Base.metadata.tables["reported"]).values(device_id="dev-1", state={"n": 1}, received=T0)
        outcome: list[object] = []

        def store_second() -> None:
            try:
                outcome.append(second.put_reported_many([("dev-1", {"n": 2}, T0 + timedelta(seconds=1))]))
            except Exception as exc:  # what the replica got is the answer
                outcome.append(exc)

        with first.engine.begin() as conn:
            conn.execute(reported)
            racer = threading.Thread(target=store_second)
            racer.start()
            racer.join(0.5)
            assert racer.is_alive(), f"the second store did not wait for the first: {outcome}"
        racer.join(30)
        assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
        assert second.reported()["dev-1"].state == {"n": 2}
    finally:
        first.close()
        second.close()


def test_two_replicas_storing_a_first_online_at_once_both_succeed(hub_url: str) -> None:
    """Replica A is storing dev-1's first ``online`` (device row locked, presence inserted, not committed); replica
    B stores one too. B waits for A (the device row's lock), then updates A's row: no unique violation (the
    combined cluster test's survivor dropped ``online`` messages on ``presence_pkey`` when B read "no row")."""
    first, second = HubStore(hub_url), HubStore(hub_url)
    try:
        first.add_device("dev-1", {}, T0)
        devices, presence = Base.metadata.tables["devices"], Base.metadata.tables["presence"]
        outcome: list[object] = []

        def store_second() -> None:
            try:
                outcome.append(TelemetryStore(second).set_online("dev-1", False, T0 + timedelta(seconds=1)))
            except Exception as exc:  # what the replica got is the answer
                outcome.append(exc)

        with first.engine.begin() as conn:  # what set_online does, held open
            conn.execute(select(devices.c.id).where(devices.c.id == "dev-1").with_for_update())
            conn.execute(insert(presence).values(device_id="dev-1", online=True, last_seen=T0))
            racer = threading.Thread(target=store_second)
            racer.start()
            racer.join(0.5)
            if hub_url.startswith("postgresql"):  # SQLite: B's transaction may only wait at its write
                assert racer.is_alive(), f"the second store did not wait for the first: {outcome}"
        racer.join(30)
        assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
        stored = TelemetryStore(second).presence(["dev-1"])["dev-1"]
        assert (stored.online, stored.last_seen) == (False, T0 + timedelta(seconds=1))
    finally:
        first.close()
        second.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = HubStore(f"sqlite:///{tmp_path / 'hub.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_issue_many_issues_changed_devices_in_one_batch_and_skips_the_rest(store: HubStore) -> None:
    for name in ("dev-1", "dev-2", "dev-3"):
        store.add_device(name, {}, T0)
    store.issue("dev-2", "A", ["lab"], _signer())
    batch = [IssueRequest(d, "A", ["lab"], _signer(d)) for d in ("dev-3", "dev-1", "dev-2")]
    issued = store.issue_many(batch)
    assert [(d.device_id, d.sequence) for d in issued] == [("dev-3", 1), ("dev-1", 1)]  # dev-2 has "A" already
    assert issued[0].envelope == "dev-3#1"
    assert store.latest_fingerprints() == {d: ("A", T0) for d in ("dev-1", "dev-2", "dev-3")}
    assert {d.id: d.last_sequence for d in store.list_devices()} == {"dev-1": 1, "dev-2": 1, "dev-3": 1}


def test_issue_many_with_an_unknown_device_issues_nothing(store: HubStore) -> None:
    store.add_device("dev-1", {}, T0)
    with pytest.raises(HubNotFoundError, match="ghost"):
        store.issue_many([IssueRequest("dev-1", "A", [], _signer()), IssueRequest("ghost", "A", [], _signer())])
    assert store.latest_desired() == {}
    assert store.get_device("dev-1").last_sequence == 0
    with pytest.raises(ValueError, match="at most once"):
        store.issue_many([IssueRequest("dev-1", "A", [], _signer()), IssueRequest("dev-1", "B", [], _signer())])


def test_reports_are_stored_in_batches_and_unknown_devices_are_named(store: HubStore) -> None:
    store.add_device("dev-1", {}, T0)
    store.add_device("dev-2", {}, T0)
    store.put_reported("dev-1", {"lastAppliedSequence": 1}, T0)
    stored, unknown = store.put_reported_many([
        ("dev-1", {"lastAppliedSequence": 2}, T0 + timedelta(seconds=1)),
        ("ghost", {}, T0),
        ("dev-2", {"lastAppliedSequence": 5}, T0),
        ("dev-2", {"lastAppliedSequence": 6}, T0 + timedelta(seconds=2)),
    ])
    assert [r.device_id for r in stored] == ["dev-1", "dev-2"] and unknown == ["ghost"]
    reported = store.reported()
    assert reported["dev-1"].state == {"lastAppliedSequence": 2}
    assert reported["dev-2"].state == {"lastAppliedSequence": 6}
    assert reported["dev-2"].received == T0 + timedelta(seconds=2)
