"""Telemetry arrives at least once; the hub stores each sample once (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hub_world import HubWorld
from memory_link import MemoryLink

from edgeship.errors import InputError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services import HubServices

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _sample(seq: int, at: datetime) -> dict[str, Any]:
    return {"time": at.isoformat().replace("+00:00", "Z"), "seq": seq, "cpuPercent": 1.0, "memoryBytes": 1024,
            "modules": {}}


def _batch(*samples: tuple[int, datetime]) -> dict[str, Any]:
    return {"schemaVersion": 1, "deviceId": "dev-1", "dropped": 0, "samples": [_sample(q, t) for q, t in samples]}


def _stored(hub: HubServices) -> list[int]:
    """Every stored sample's seq, oldest batch first."""
    return [s["seq"] for r in reversed(hub.fleet.recent_telemetry("dev-1", 1000)) for s in r.batch["samples"]]


@pytest.fixture
def hub(hub_url: str, world: HubWorld) -> HubServices:
    service = world.services(hub_url)
    service.fleet.create_device("dev-1")
    return service


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path)


def test_a_batch_re_sent_after_a_lost_puback_is_acknowledged_and_not_stored_again(hub: HubServices) -> None:
    batch = _batch((1, T0), (2, T0 + timedelta(seconds=10)))
    assert hub.fleet.record_telemetry("dev-1", batch) is not None
    assert hub.fleet.record_telemetry("dev-1", batch) is None
    assert _stored(hub) == [1, 2]


def test_a_batch_overlapping_what_is_stored_keeps_only_its_new_samples(hub: HubServices) -> None:
    hub.fleet.record_telemetry("dev-1", _batch((1, T0), (2, T0 + timedelta(seconds=10))))
    record = hub.fleet.record_telemetry("dev-1",
                                        _batch((2, T0 + timedelta(seconds=10)), (3, T0 + timedelta(seconds=20))))
    assert record is not None and [s["seq"] for s in record.batch["samples"]] == [3]
    assert _stored(hub) == [1, 2, 3]


def test_the_same_time_written_differently_is_still_a_duplicate(hub: HubServices) -> None:
    hub.fleet.record_telemetry("dev-1", _batch((1, T0)))
    again = _batch((1, T0))
    again["samples"][0]["time"] = "2026-01-01T01:00:00+01:00"  # the same instant
    assert hub.fleet.record_telemetry("dev-1", again) is None


def test_an_agent_whose_data_dir_was_wiped_restarts_seq_at_1_and_is_stored(hub: HubServices) -> None:
    hub.fleet.record_telemetry("dev-1", _batch((1, T0), (2, T0 + timedelta(seconds=10))))
    later = T0 + timedelta(hours=1)
    assert hub.fleet.record_telemetry("dev-1", _batch((1, later), (2, later + timedelta(seconds=10)))) is not None
    assert _stored(hub) == [1, 2, 1, 2]
    assert hub.fleet.record_telemetry("dev-1", _batch((1, later))) is None  # its own re-send is still caught


def test_batches_stored_out_of_order_by_two_replicas_are_both_kept(hub: HubServices) -> None:
    hub.fleet.record_telemetry("dev-1", _batch((3, T0 + timedelta(seconds=30))))
    assert hub.fleet.record_telemetry("dev-1", _batch((2, T0 + timedelta(seconds=20)))) is not None
    assert sorted(_stored(hub)) == [2, 3]


def test_a_re_send_stored_by_two_threads_at_once_is_stored_once(hub: HubServices) -> None:
    batch = _batch(*[(q, T0 + timedelta(seconds=q)) for q in range(1, 51)])
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait()
            hub.fleet.record_telemetry("dev-1", batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _stored(hub) == list(range(1, 51))


def test_the_device_is_told_what_was_stored_a_copy_included_and_what_was_refused_with_why(
        hub_url: str, world: HubWorld) -> None:
    link = MemoryLink()
    hub = world.services(hub_url, link=link)
    hub.fleet.create_device("dev-1")
    batch = _batch((4, T0), (5, T0 + timedelta(seconds=10)))
    hub.fleet.record_telemetry("dev-1", batch)
    hub.fleet.record_telemetry("dev-1", batch)  # a copy sent again because the first confirmation was lost
    assert link.confirmed == [("dev-1", 5, None), ("dev-1", 5, None)]
    bad = _batch((6, T0 + timedelta(seconds=20)))
    bad["samples"][0]["cpuPercent"] = -1
    with pytest.raises(InputError):
        hub.fleet.record_telemetry("dev-1", bad)
    assert link.confirmed[-1][:2] == ("dev-1", 6) and "cpuPercent" in str(link.confirmed[-1][2])
    with pytest.raises(InputError):  # another device's batch on this device's topic: refused, said to this device
        hub.fleet.record_telemetry("dev-1", {**_batch((7, T0 + timedelta(seconds=30))), "deviceId": "dev-2"})
    assert link.confirmed[-1][:2] == ("dev-1", 7) and "dev-2" in str(link.confirmed[-1][2])
    assert _stored(hub) == [4, 5]


def test_nothing_is_confirmed_when_the_batch_names_no_sample_or_the_device_is_unknown(
        hub_url: str, world: HubWorld) -> None:
    link = MemoryLink()
    hub = world.services(hub_url, link=link)
    hub.fleet.create_device("dev-1")
    for junk in ({"samples": "no"}, {"schemaVersion": 1, "deviceId": "dev-1", "dropped": 0, "samples": [{}]}):
        with pytest.raises(InputError):
            hub.fleet.record_telemetry("dev-1", junk)
    with pytest.raises(HubNotFoundError):
        hub.fleet.record_telemetry("dev-9", {**_batch((1, T0)), "deviceId": "dev-9"})
    assert link.confirmed == []
