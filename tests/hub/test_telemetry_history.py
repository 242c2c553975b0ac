"""The telemetry history per device, module and version (issue 15), on SQLite and a real PostgreSQL.

Batches go in as the MQTT bridge hands them over (``Fleet.record_telemetry``); the history
is read as the rollout gates read it (``TelemetryHistory.window`` and ``baseline``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from hub_world import HubWorld
from sqlalchemy import create_engine, func, inspect, select

from edgeship.errors import InputError
from edgeship.hub.services import HubServices
from edgeship.hub.store import CredentialStore, HubStore, TelemetryHistory, schema
from edgeship.hub.store.history import BUCKET, KEEP_BUCKETS, KEEP_SERIES, KEEP_VERSIONS, Aggregate, HistoryRow

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _module(version: int | None, requests: int = 100, server: int = 0, client: int = 0,
            p99: float = 10.0) -> dict[str, Any]:
    entry: dict[str, Any] = {"requests": requests, "errors": server + client,
                             "latencyMs": {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99}}
    if version is not None:
        entry.update(version=version, serverErrors=server, clientErrors=client)
    return entry


class Device:
    """A device's agent as far as telemetry goes: its seq counter and the batches it sends."""

    def __init__(self, hub: HubServices, device_id: str) -> None:
        self.hub, self.id, self.seq = hub, device_id, 0
        hub.fleet.create_device(device_id)

    def sample(self, at: datetime, **modules: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        return {"time": _z(at), "seq": self.seq, "cpuPercent": 1.0, "memoryBytes": 1024, "modules": modules}

    def send(self, *samples: dict[str, Any], schema_version: int = 2) -> Any:
        return self.hub.fleet.record_telemetry(self.id, {
            "schemaVersion": schema_version, "deviceId": self.id, "dropped": 0, "samples": list(samples)})

    def run(self, version: int, start: datetime, minutes: int, **entry: Any) -> None:
        """One sample a minute of ``digits`` ``version`` for ``minutes`` minutes from ``start``, in one batch."""
        self.send(*[self.sample(start + i * MINUTE, digits=_module(version, **entry)) for i in range(minutes)])


@pytest.fixture
def hub(hub_url: str, tmp_path: Path) -> HubServices:
    return HubWorld(tmp_path).services(hub_url)


@pytest.fixture
def history(hub: HubServices) -> TelemetryHistory:
    return TelemetryHistory(hub.store)


def _rows(hub: HubServices, device_id: str) -> list[tuple[str, int, datetime]]:
    with hub.store._tx() as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(HistoryRow.module, HistoryRow.version, HistoryRow.bucket)
            .where(HistoryRow.device_id == device_id).order_by(HistoryRow.module, HistoryRow.version,
                                                                HistoryRow.bucket))]


def test_samples_of_one_minute_add_up_into_one_bucket_with_a_request_weighted_p99(
        hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    dev.send(dev.sample(T0 + timedelta(seconds=5), digits=_module(3, requests=100, server=2, client=7, p99=10.0)),
             dev.sample(T0 + timedelta(seconds=35), digits=_module(3, requests=300, server=1, client=0, p99=30.0)),
             dev.sample(T0 + timedelta(seconds=50), digits=_module(3, requests=0, p99=0.0)))
    assert _rows(hub, "dev-1") == [("digits", 3, T0)]
    found = history.window("digits", 3, ["dev-1"], since=T0)
    assert found == {"dev-1": Aggregate(samples=3, requests=400, server_errors=3, client_errors=7,
                                        p99_ms=pytest.approx(25.0))}  # (100*10 + 300*30) / 400
    assert found["dev-1"].error_rate == pytest.approx(3 / 400)  # 4xx are the callers' bad input, not counted


def test_a_window_without_requests_has_no_p99_and_no_error_rate(hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    dev.send(dev.sample(T0, digits=_module(3, requests=0)))
    idle = history.window("digits", 3, ["dev-1"], since=T0)["dev-1"]
    assert (idle.samples, idle.requests, idle.p99_ms, idle.error_rate) == (1, 0, None, None)


def test_a_window_holds_the_buckets_its_samples_reach_into_per_device_and_version(
        hub: HubServices, history: TelemetryHistory) -> None:
    one, two, idle = Device(hub, "dev-1"), Device(hub, "dev-2"), Device(hub, "dev-3")
    one.run(3, T0, 10, requests=10)
    two.run(3, T0 + 5 * MINUTE, 10, requests=20)
    two.send(two.sample(T0 + 20 * MINUTE, digits=_module(4, requests=99)))  # another version: not in v3's window
    idle.send(idle.sample(T0, digits=_module(None, requests=5)))  # a sample that names no version

    found = history.window("digits", 3, ["dev-1", "dev-2", "dev-3", "dev-unknown"], since=T0 + 4 * MINUTE,
                           until=T0 + 8 * MINUTE)
    assert {d: (a.samples, a.requests) for d, a in found.items()} == {"dev-1": (4, 40), "dev-2": (3, 60)}
    since_mid_minute = history.window("digits", 3, ["dev-1"], since=T0 + 9 * MINUTE + timedelta(seconds=1))
    assert since_mid_minute == {}  # dev-1's last sample was at 12:09:00: its bucket reaches no further
    assert history.window("digits", 3, ["dev-2"], since=T0 + 14 * MINUTE)["dev-2"].samples == 1
    assert history.window("other", 3, ["dev-1"], since=T0) == {}
    assert history.window("digits", 3, [], since=T0) == {}
    with pytest.raises(ValueError, match="aware"):
        history.window("digits", 3, ["dev-1"], since=T0.replace(tzinfo=None))


def test_many_devices_are_read_in_one_call(hub: HubServices, history: TelemetryHistory) -> None:
    ids = [f"dev-{i:03d}" for i in range(450)]  # more than one query's worth of devices
    hub.fleet.create_devices((d, None) for d in ids)
    for d in ids:
        hub.fleet.record_telemetry(d, {"schemaVersion": 2, "deviceId": d, "samples": [
            {"time": _z(T0), "seq": 1, "cpuPercent": 0, "memoryBytes": 0, "modules": {"digits": _module(2)}},
            {"time": _z(T0 + 40 * MINUTE), "seq": 2, "cpuPercent": 0, "memoryBytes": 0,
             "modules": {"digits": _module(3)}}]})
    assert len(history.window("digits", 3, ids, since=T0)) == 450
    assert {a.samples for a in history.baseline("digits", 3, ids).values()} == {1}
    assert len(history.baseline("digits", 3, ids)) == 450


def test_the_baseline_is_the_version_replaced_on_the_same_device_over_its_last_span(
        hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    dev.run(1, T0, 60, requests=10, server=0, p99=10.0)  # v1 for an hour
    dev.run(2, T0 + 60 * MINUTE, 20, requests=10, server=5, p99=100.0)  # then the release
    base = history.baseline("digits", 2, ["dev-1"])["dev-1"]
    assert (base.samples, base.requests, base.server_errors, base.p99_ms) == (30, 300, 0, pytest.approx(10.0))
    assert history.baseline("digits", 2, ["dev-1"], span=10 * MINUTE)["dev-1"].samples == 10
    assert history.baseline("digits", 2, ["dev-1"], span=timedelta(hours=5))["dev-1"].samples == 60
    now = history.window("digits", 2, ["dev-1"], since=T0 + 60 * MINUTE)["dev-1"]
    assert (now.samples, now.error_rate, now.p99_ms) == (20, 0.5, pytest.approx(100.0))
    assert history.baseline("digits", 1, ["dev-1"]) == {}  # nothing ran before v1
    with pytest.raises(ValueError, match="span"):
        history.baseline("digits", 2, ["dev-1"], span=timedelta(0))


def test_a_device_the_release_has_not_reached_yet_has_its_current_version_as_baseline(
        hub: HubServices, history: TelemetryHistory) -> None:
    waiting = Device(hub, "dev-2")
    waiting.run(1, T0, 45, requests=4)
    assert history.baseline("digits", 2, ["dev-2"])["dev-2"].samples == 30
    assert history.window("digits", 2, ["dev-2"], since=T0) == {}


def test_the_baseline_ignores_what_the_old_version_measured_after_the_release_started(
        hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    dev.run(1, T0, 10, requests=10, p99=10.0)
    dev.run(3, T0 + 10 * MINUTE, 5, requests=10, p99=500.0)  # a bad release, rolled back:
    dev.run(1, T0 + 15 * MINUTE, 10, requests=10, p99=20.0)  # v1 again, slower this time
    dev.run(2, T0 + 25 * MINUTE, 5, requests=10, p99=12.0)  # then the next release

    against_v1 = history.baseline("digits", 3, ["dev-1"])["dev-1"]
    assert (against_v1.samples, against_v1.p99_ms) == (10, pytest.approx(10.0))  # v1 before v3 only
    latest = history.baseline("digits", 2, ["dev-1"])["dev-1"]
    assert latest.samples == 20  # v1's last 30 minutes before v2: both of its stretches, not v3's
    assert latest.p99_ms == pytest.approx(15.0)


def test_a_version_keeps_its_newest_buckets(hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    dev.run(1, T0, KEEP_BUCKETS + 40, requests=1)
    rows = _rows(hub, "dev-1")
    assert len(rows) == KEEP_BUCKETS
    assert rows[0][2] == T0 + 40 * MINUTE and rows[-1][2] == T0 + (KEEP_BUCKETS + 39) * MINUTE
    dev.run(2, T0 + (KEEP_BUCKETS + 40) * MINUTE, 5)
    assert history.baseline("digits", 2, ["dev-1"], span=timedelta(days=1))["dev-1"].samples == KEEP_BUCKETS


def test_a_module_keeps_its_most_recently_measured_versions(hub: HubServices) -> None:
    dev = Device(hub, "dev-1")
    for i, version in enumerate([1, 4, 2, 3]):  # 4 was a release rolled back to 2; newest first: 3, 2, 4
        dev.run(version, T0 + 10 * i * MINUTE, 2)
    assert {v for _, v, _ in _rows(hub, "dev-1")} == {3, 2, 4}
    assert KEEP_VERSIONS == 3


def test_a_device_keeps_a_bounded_number_of_module_versions(hub: HubServices) -> None:
    dev = Device(hub, "dev-1")
    names = [f"m{i:02d}" for i in range(KEEP_SERIES + 4)]
    dev.send(*[dev.sample(T0 + i * MINUTE, **{name: _module(1)}) for i, name in enumerate(names)])
    assert [m for m, _, _ in _rows(hub, "dev-1")] == names[4:]  # the most recently measured ones


def test_a_re_sent_batch_is_counted_once(hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    first = [dev.sample(T0 + i * timedelta(seconds=20), digits=_module(2, requests=10, server=1)) for i in range(3)]
    assert dev.send(*first) is not None
    assert dev.send(*first) is None  # the PUBACK was lost: the same batch again
    overlapping = [first[-1], dev.sample(T0 + timedelta(seconds=60), digits=_module(2, requests=10, server=1))]
    record = dev.send(*overlapping)
    assert record is not None and len(record.batch["samples"]) == 1
    found = history.window("digits", 2, ["dev-1"], since=T0)["dev-1"]
    assert (found.samples, found.requests, found.server_errors) == (4, 40, 4)


def test_old_agents_batches_are_still_accepted_and_stored_without_history(
        hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    old = dev.sample(T0, digits=_module(None, requests=10, server=1))  # schemaVersion 1, as agents before 2 send
    assert dev.send(old, schema_version=1) is not None
    queued = dev.sample(T0 + MINUTE, digits=_module(None, requests=10))  # queued by an older agent, sent by a new one
    assert dev.send(queued) is not None
    assert [s["seq"] for r in hub.fleet.recent_telemetry("dev-1") for s in r.batch["samples"]] == [2, 1]
    assert _rows(hub, "dev-1") == []
    assert history.window("digits", 1, ["dev-1"], since=T0) == {}


def test_a_version_1_batch_with_the_new_keys_is_refused_as_an_older_hub_refuses_it(hub: HubServices) -> None:
    dev = Device(hub, "dev-1")
    with pytest.raises(InputError, match="version: Extra inputs"):
        dev.send(dev.sample(T0, digits=_module(2)), schema_version=1)
    with pytest.raises(InputError, match="schemaVersion: must be one of 1, 2"):
        dev.send(dev.sample(T0, digits=_module(2)), schema_version=3)
    split = _module(2, server=1, client=1)
    del split["clientErrors"]
    with pytest.raises(InputError, match="serverErrors and clientErrors come together"):
        dev.send(dev.sample(T0, digits=split))
    with pytest.raises(InputError, match="must not exceed errors"):
        dev.send(dev.sample(T0, digits={**_module(2, server=1), "errors": 0}))
    assert _rows(hub, "dev-1") == [] and hub.fleet.recent_telemetry("dev-1") == []


def test_a_deleted_device_takes_its_history_along(hub: HubServices) -> None:
    dev = Device(hub, "dev-1")
    dev.run(1, T0, 3)
    CredentialStore(hub.store).delete_device("dev-1", T0)  # what DELETE /devices/{id} runs
    with hub.store._tx() as s:
        assert s.scalar(select(func.count()).select_from(HistoryRow)) == 0


def test_the_history_migration_goes_down_to_0004_and_up_again(hub_url: str, tmp_path: Path) -> None:
    HubStore(hub_url).close()
    engine = create_engine(hub_url)
    try:
        with engine.begin() as conn:
            command.downgrade(schema.alembic_config(conn), "0004")
        with engine.connect() as conn:
            assert "telemetry_history" not in inspect(conn).get_table_names()
            assert schema.current_revision(conn) == "0004"
    finally:
        engine.dispose()
    services = HubWorld(tmp_path).services(hub_url)  # opening the store upgrades it again
    try:
        assert services.store.upgraded_from == "0004"
        Device(services, "dev-1").run(1, T0, 2)
        assert TelemetryHistory(services.store).window("digits", 1, ["dev-1"], since=T0)["dev-1"].samples == 2
    finally:
        services.store.close()


def test_buckets_are_whole_minutes_of_the_samples_own_clock(hub: HubServices) -> None:
    dev = Device(hub, "dev-1")
    dev.send(dev.sample(T0 + timedelta(seconds=59.9), digits=_module(1)),
             {**dev.sample(T0, digits=_module(1)), "time": "2026-03-01T13:01:30+01:00"})  # 12:01:30 UTC
    assert [b for _, _, b in _rows(hub, "dev-1")] == [T0, T0 + MINUTE]
    assert BUCKET == MINUTE


def test_a_device_clock_at_the_edges_of_the_calendar_breaks_nothing(
        hub: HubServices, history: TelemetryHistory) -> None:
    dev = Device(hub, "dev-1")
    dev.send(dev.sample(datetime(1, 1, 1, tzinfo=timezone.utc), digits=_module(1)))
    dev.send({**dev.sample(T0, digits=_module(2)), "time": "9999-12-31T23:59:59Z"})
    dev.send({**dev.sample(T0, digits=_module(2)), "time": "9999-12-31T23:59:59-01:00"})  # past the last UTC day
    assert history.baseline("digits", 2, ["dev-1"])["dev-1"].samples == 1
    assert history.baseline("digits", 1, ["dev-1"], span=timedelta(days=1)) == {}
    assert history.window("digits", 2, ["dev-1"], since=T0)["dev-1"].samples == 1
