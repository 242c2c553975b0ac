"""Telemetry stored in batches (ADR 0052): many devices' batches in one transaction, each sample once (SQLite and
PostgreSQL), compared only with the kept batches whose seq range overlaps; the worker's batches and its failures."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from hub_world import HubWorld
from memory_link import MemoryLink
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from edgeship.errors import InputError
from edgeship.hub.bridge.subscriber import Subscriber
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services import HubServices
from edgeship.hub.store import HubStore, TelemetryRecord, TelemetryStore, schema
from edgeship.mqtt import parse_device_topic

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DEVICES = [f"dev-{n:02d}" for n in range(30)]


def _sample(seq: int, at: datetime | None = None) -> dict[str, Any]:
    at = at or T0 + timedelta(seconds=seq)
    return {"time": at.isoformat().replace("+00:00", "Z"), "seq": seq, "cpuPercent": 1.0, "memoryBytes": 1024,
            "modules": {}}


def _batch(device: str, *seqs: int, at: datetime | None = None) -> dict[str, Any]:
    return {"schemaVersion": 1, "deviceId": device, "dropped": 0, "samples": [_sample(q, at) for q in seqs]}


def _stored(hub: HubServices, device: str) -> list[int]:
    """Every stored sample's seq, oldest batch first."""
    return [s["seq"] for r in reversed(hub.fleet.recent_telemetry(device, 1000)) for s in r.batch["samples"]]


def _commits(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    return commits


def _refuse_inserts(engine: Engine, device: str | None) -> None:
    """A trigger that makes the database refuse telemetry rows of ``device`` (None: of every device)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            when = f"WHEN NEW.device_id = '{device}'" if device else ""
            conn.exec_driver_sql(f"CREATE TRIGGER refuse_telemetry BEFORE INSERT ON telemetry {when} "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION refuse_telemetry() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql")
            when = f"WHEN (NEW.device_id = '{device}')" if device else ""
            conn.exec_driver_sql(f"CREATE TRIGGER refuse_telemetry BEFORE INSERT ON telemetry FOR EACH ROW {when} "
                                 "EXECUTE FUNCTION refuse_telemetry()")


def _allow_inserts(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER refuse_telemetry")
        else:
            conn.exec_driver_sql("DROP TRIGGER refuse_telemetry ON telemetry")
            conn.exec_driver_sql("DROP FUNCTION refuse_telemetry()")


@pytest.fixture
def link() -> MemoryLink:
    return MemoryLink()


@pytest.fixture
def hub(hub_url: str, tmp_path: Path, link: MemoryLink) -> HubServices:
    service = HubWorld(tmp_path).services(hub_url, link=link)
    service.fleet.create_devices((d, None) for d in DEVICES)
    return service


def test_many_devices_batches_go_in_one_transaction_each_sample_once(hub: HubServices, link: MemoryLink) -> None:
    fleet = hub.fleet
    fleet.record_telemetry_many([(d, _batch(d, 1, 2, 3)) for d in DEVICES])
    fleet.record_telemetry_many([(d, _batch(d, 4, 5, 6)) for d in DEVICES])
    link.confirmed.clear()
    bad = _batch("dev-00", 10)
    bad["samples"][0]["cpuPercent"] = -1
    items: list[tuple[str, dict[str, Any]]] = [("dev-00", bad), ("dev-99", _batch("dev-99", 1))]
    for d in reversed(DEVICES):  # not in id order: the store locks them in id order itself
        items += [(d, _batch(d, 1, 2, 3)),  # a re-send of an earlier transaction's batch
                  (d, _batch(d, 5, 6, 7)),  # overlapping the newest kept batch: only 7 is new
                  (d, _batch(d, 8, 9)),
                  (d, _batch(d, 8, 9))]  # a copy in the same worker batch
    commits = _commits(hub.store.engine)
    outcomes = fleet.record_telemetry_many(items)

    assert len(commits) == 1
    assert isinstance(outcomes[0], InputError) and not isinstance(outcomes[0], HubNotFoundError)
    assert isinstance(outcomes[1], HubNotFoundError)
    for n in range(len(DEVICES)):
        resent, overlapping, new, copy = outcomes[2 + 4 * n: 6 + 4 * n]
        assert resent is None and copy is None
        assert isinstance(overlapping, TelemetryRecord) and [s["seq"] for s in overlapping.batch["samples"]] == [7]
        assert isinstance(new, TelemetryRecord) and [s["seq"] for s in new.batch["samples"]] == [8, 9]
    for d in DEVICES:
        assert _stored(hub, d) == list(range(1, 10)), d
    # the refused batch is told why; every other known device's batch (copies too) is confirmed, in order
    assert link.confirmed[0][:2] == ("dev-00", 10) and "cpuPercent" in str(link.confirmed[0][2])
    assert link.confirmed[1:] == [(d, q, None) for d in reversed(DEVICES) for q in (3, 7, 9, 9)]


def test_nothing_is_confirmed_when_the_transaction_fails(hub: HubServices, link: MemoryLink) -> None:
    hub.fleet.record_telemetry_many([(d, _batch(d, 1)) for d in DEVICES])
    link.confirmed.clear()
    _refuse_inserts(hub.store.engine, "dev-07")
    with pytest.raises(Exception, match="refused by the test"):
        hub.fleet.record_telemetry_many([(d, _batch(d, 2)) for d in DEVICES])
    assert link.confirmed == []
    assert {d: _stored(hub, d) for d in DEVICES} == {d: [1] for d in DEVICES}, "all or none"


def test_replicas_storing_the_same_copies_at_once_store_each_once(hub: HubServices) -> None:
    """Four workers (as four replicas) store the same devices' batches in four orders at once: no deadlock, no error,
    each sample once (the device rows are locked, in id order, before the kept batches are read)."""
    batches = [(d, _batch(d, *range(1, 21))) for d in DEVICES]
    orders = [batches, batches[::-1], batches[1::2] + batches[::2], batches[::2][::-1] + batches[1::2]]
    barrier = threading.Barrier(len(orders))
    errors: list[BaseException] = []

    def store(items: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            barrier.wait()
            hub.fleet.record_telemetry_many(items)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(order,)) for order in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {d: _stored(hub, d) for d in DEVICES} == {d: list(range(1, 21)) for d in DEVICES}


def _subscriber_run(hub: HubServices, messages: list[tuple[str, str, bytes]]) -> tuple[Subscriber, int]:
    """Queue the messages before the worker starts, so it takes them as one batch; returns it and the PUBACKs."""
    subscriber = Subscriber(hub.fleet)
    acks: list[int] = []
    for device, channel, payload in messages:
        topic = parse_device_topic(f"edgeship/v1/devices/{device}/{channel}")
        assert topic is not None
        subscriber.on_message(topic, payload, lambda: acks.append(1))
    subscriber.start()
    subscriber.stop()
    return subscriber, len(acks)


def test_the_worker_stores_a_batch_together_and_survives_a_database_that_refuses(
        hub: HubServices, link: MemoryLink) -> None:
    engine = hub.store.engine
    commits = _commits(engine)
    messages = [(d, "telemetry", json.dumps(_batch(d, 1, 2)).encode()) for d in DEVICES]
    messages += [("dev-00", "telemetry", json.dumps(_batch("dev-00", 2, 3)).encode()),
                 ("dev-98", "telemetry", json.dumps(_batch("dev-98", 1)).encode()),
                 ("dev-01", "telemetry", b"{not json"),
                 ("dev-01", "online", b"1")]
    worker, acks = _subscriber_run(hub, messages)
    assert len(commits) == 2, "the telemetry in one transaction, the online message in its own"
    assert acks == len(messages)
    assert worker.handled == len(DEVICES) + 2
    assert worker.drops.by_reason == {("telemetry", "unknown-device"): 1, ("telemetry", "malformed"): 1}
    assert _stored(hub, "dev-00") == [1, 2, 3]

    # one device's rows refused by the database: its batch alone is lost (not confirmed, so its agent sends it again)
    link.confirmed.clear()
    _refuse_inserts(engine, "dev-07")
    worker, acks = _subscriber_run(hub, [(d, "telemetry", json.dumps(_batch(d, 4)).encode()) for d in DEVICES])
    assert acks == len(DEVICES) and worker.handled == len(DEVICES) - 1 and worker.dropped == 0
    assert sorted(link.confirmed) == [(d, 4, None) for d in DEVICES if d != "dev-07"]
    assert _stored(hub, "dev-07") == [1, 2] and _stored(hub, "dev-08") == [1, 2, 4]
    _allow_inserts(engine)

    # the whole database refuses: nothing stored or confirmed, the worker goes on and stores what comes next
    link.confirmed.clear()
    _refuse_inserts(engine, None)
    worker = Subscriber(hub.fleet)
    worker.start()
    try:
        topic = parse_device_topic("edgeship/v1/devices/dev-07/telemetry")
        assert topic is not None
        worker.on_message(topic, json.dumps(_batch("dev-07", 4)).encode())
        worker.submit(lambda: _allow_inserts(engine))  # runs after the message above was handled
        worker.on_message(topic, json.dumps(_batch("dev-07", 4)).encode())
    finally:
        worker.stop()
    assert worker.handled == 1 and link.confirmed == [("dev-07", 4, None)]
    assert _stored(hub, "dev-07") == [1, 2, 4]


def test_only_overlapping_batches_are_read_and_older_re_sends_are_still_caught(hub: HubServices) -> None:
    fleet = hub.fleet
    for first in range(1, 200, 2):  # 100 kept batches of two samples: seq 1-2, 3-4, ... 199-200
        fleet.record_telemetry("dev-01", _batch("dev-01", first, first + 1))
    assert fleet.record_telemetry("dev-01", _batch("dev-01", 3, 4)) is None, "the oldest kept batches but one"
    assert fleet.record_telemetry("dev-01", _batch("dev-01", 2, 3)) is None, "spanning two kept batches"
    assert fleet.record_telemetry("dev-01", _batch("dev-01", 1, 200)) is None, "spanning every kept batch"
    wiped = T0 + timedelta(days=1)  # an agent whose data folder was wiped: seq from 1 again, later times
    stored = fleet.record_telemetry("dev-01", _batch("dev-01", 3, 4, at=wiped))
    assert stored is not None and len(stored.batch["samples"]) == 2
    assert fleet.record_telemetry("dev-01", _batch("dev-01", 3, at=wiped)) is None
    big = 2**63 + 5  # a seq beyond 64 bits: stored without a range, so that row is always compared
    assert fleet.record_telemetry("dev-01", _batch("dev-01", big, at=T0)) is not None
    assert fleet.record_telemetry("dev-01", _batch("dev-01", big, at=T0)) is None
    assert fleet.record_telemetry("dev-01", {**_batch("dev-01", 9), "samples": [
        _sample(9), _sample(big, T0)]}) is None


def test_a_row_without_a_range_is_always_compared_and_one_older_than_the_kept_batches_is_not(
        hub: HubServices) -> None:
    """Rows an older hub wrote beside this one have no range; a re-send older than the kept batches is stored again,
    as before ADR 0052 (the module docstring of ``edgeship.hub.store.telemetry`` says so)."""
    fleet = hub.fleet
    fleet.record_telemetry("dev-02", _batch("dev-02", 5, 6))
    with hub.store.engine.begin() as conn:
        conn.execute(text("UPDATE telemetry SET seq_min = NULL, seq_max = NULL WHERE device_id = 'dev-02'"))
    fleet.record_telemetry("dev-02", _batch("dev-02", 50, 60))
    assert fleet.record_telemetry("dev-02", _batch("dev-02", 6)) is None

    store = TelemetryStore(hub.store, keep=3)
    for q in (1, 2, 3, 4):
        store.add("dev-03", _batch("dev-03", q), T0)
    assert store.add("dev-03", _batch("dev-03", 2), T0) is None, "still kept"
    assert store.add("dev-03", _batch("dev-03", 1), T0) is not None, "pushed out by the bound: stored again"


def test_a_batch_of_many_devices_keeps_each_ones_newest_batches(hub: HubServices) -> None:
    store = TelemetryStore(hub.store, keep=3)
    store.add_many([(d, _batch(d, q), T0) for q in range(1, 6) for d in DEVICES[:5]])
    store.add_many([(d, _batch(d, 6), T0) for d in DEVICES[:3]] + [("dev-09", _batch("dev-09", 1), T0)])
    kept = {d: [s["seq"] for r in store.recent(d, 10) for s in r.batch["samples"]] for d in [*DEVICES[:5], "dev-09"]}
    assert kept == {**{d: [6, 5, 4] for d in DEVICES[:3]}, **{d: [5, 4, 3] for d in DEVICES[3:5]}, "dev-09": [1]}


def test_the_migration_gives_old_rows_their_seq_range(hub_url: str) -> None:
    HubStore(hub_url).close()
    engine = HubStore(hub_url).engine
    with engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), "0008")
    rows = [_batch("dev-1", 7, 3, 5), _batch("dev-1"), _batch("dev-1", 2**63 + 1, 4, at=T0),
            _batch("dev-1", 2**63 - 1, at=T0)]
    when = T0.replace(tzinfo=None) if hub_url.startswith("sqlite") else T0  # as the hub's 0.1.0 rows are stored
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO devices (id, tags, created, last_sequence) VALUES ('dev-1', '{}', :t, 0)"),
                     {"t": when})
        conn.execute(text("INSERT INTO telemetry (device_id, received, batch) VALUES ('dev-1', :t, :b)"),
                     [{"t": when, "b": json.dumps(b)} for b in rows])
    engine.dispose()
    store = HubStore(hub_url)  # upgrades to the head, as a hub starting does
    try:
        with store.engine.connect() as conn:
            ranges = conn.execute(text("SELECT seq_min, seq_max FROM telemetry ORDER BY id")).all()
        assert [tuple(r) for r in ranges] == [(3, 7), (None, None), (None, None), (2**63 - 1, 2**63 - 1)]
        telemetry = TelemetryStore(store)
        assert telemetry.add("dev-1", _batch("dev-1", 5), T0) is None, "an old row's sample is a duplicate"
        assert telemetry.add("dev-1", _batch("dev-1", 4, at=T0), T0) is None, "and one in a row without a range"
        assert telemetry.add("dev-1", _batch("dev-1", 6), T0) is not None
        with store.engine.begin() as conn:  # and back: the columns go, the rows stay
            command.downgrade(schema.alembic_config(conn), "0008")
            assert conn.execute(text("SELECT count(*) FROM telemetry")).scalar() == 5
    finally:
        store.close()
