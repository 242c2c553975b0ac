"""``FleetQuery``: the dashboard's fleet page - filters, counts and pages - on SQLite and a real PostgreSQL.

The services are the real ones (``HubWorld.services``) over each backend; devices report
through ``Fleet.record_reported`` and come online through ``Fleet.record_online``, as the
MQTT bridge's worker calls them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_world import HubWorld

from edgeship.errors import InputError
from edgeship.hub.services import HubServices
from edgeship.hub.services.fleet_query import FleetFilter, FleetQuery
from edgeship.hub.store import HubStore
from edgeship.hub.targeting import TargetConditionError


def _fleet(url: str, root: Path) -> HubServices:
    world = HubWorld(root / "world")
    world.root.mkdir(parents=True)
    services = world.services(url)
    services.fleet.create_devices([(f"dev-{n}", {"site": "lab" if n < 6 else "field", "n": n}) for n in range(10)])
    for n in range(10):
        sequence = services.fleet.get_device(f"dev-{n}").desired.sequence  # type: ignore[union-attr]
        if n in (0, 1, 2, 3):  # applied digits:1
            code, applied, module = 200, sequence, {"version": 1, "status": "running"}
        elif n == 4:  # failing: code 500
            code, applied, module = 500, sequence, {"version": 2, "status": "failed"}
        elif n == 5:  # a module in back-off, code 200: failing too
            code, applied, module = 200, sequence, {"version": 2, "status": "backoff"}
        elif n == 6:  # an older document: pending
            code, applied, module = 200, sequence - 1, {"version": 1, "status": "running"}
        elif n == 7:  # in progress, waiting for an unreachable download host (ADR 0042): pending, not failing
            code, applied, module = 202, sequence, {"version": 1, "status": "running"}
        else:
            continue  # never reported: pending
        services.fleet.record_reported(f"dev-{n}", {"schemaVersion": 1, "lastAppliedSequence": applied,
                                                    "status": {"code": code}, "modules": {"digits": module}})
    for n in (0, 1, 4, 6):
        services.fleet.record_online(f"dev-{n}", True)
    services.fleet.record_online("dev-1", False)
    return services


@pytest.fixture
def services(hub_url: str, tmp_path: Path) -> HubServices:
    return _fleet(hub_url, tmp_path)


def _ids(services: HubServices, **filters: str) -> list[str]:
    return [r.device_id for r in FleetQuery(services.store).page(FleetFilter(**filters), limit=500).rows]


def test_counts_states_pages_and_every_filter_on_each_backend(services: HubServices) -> None:
    page = FleetQuery(services.store).page(FleetFilter(), limit=3)
    assert (page.counts.devices, page.counts.online, page.counts.applied, page.counts.failing) == (10, 3, 4, 2)
    assert page.fleet_size == 10 and [r.device_id for r in page.rows] == ["dev-0", "dev-1", "dev-2"]
    first = page.rows[0]
    assert (first.state, first.code, first.online, first.applied_sequence == first.sequence) == (
        "applied", 200, True, True)
    assert first.last_seen is not None and first.tags == {"site": "lab", "n": 0}
    assert page.rows[1].online is False and page.rows[2].online is None  # went offline / never connected
    later = FleetQuery(services.store).page(FleetFilter(), offset=9, limit=3)
    assert [r.device_id for r in later.rows] == ["dev-9"] and later.counts.devices == 10

    assert _ids(services, condition="tags.site = 'lab' AND tags.n IN (4, 5, 6)") == ["dev-4", "dev-5"]
    assert _ids(services, condition="*") == [f"dev-{n}" for n in range(10)]
    assert _ids(services, status="failing") == ["dev-4", "dev-5"]
    assert _ids(services, status="applied") == ["dev-0", "dev-1", "dev-2", "dev-3"]
    assert _ids(services, status="pending") == ["dev-6", "dev-7", "dev-8", "dev-9"]
    assert _ids(services, status="online") == ["dev-0", "dev-4", "dev-6"]
    assert _ids(services, status="offline") == ["dev-1", "dev-2", "dev-3", "dev-5", "dev-7", "dev-8", "dev-9"]
    assert _ids(services, module="digits:2") == ["dev-4", "dev-5"]
    assert _ids(services, module="digits") == [f"dev-{n}" for n in range(8)]
    assert _ids(services, module="digits:1", condition="tags.site = 'field'") == ["dev-6", "dev-7"]
    assert _ids(services, module="other") == []
    counted = FleetQuery(services.store).page(FleetFilter(status="failing"))
    assert (counted.counts.devices, counted.counts.failing, counted.counts.online) == (2, 2, 1)


@pytest.mark.parametrize(("filters", "error", "says"), [
    ({"condition": "tags.site ="}, TargetConditionError, "column"),
    ({"condition": "x" * 5000}, TargetConditionError, "longer than"),
    ({"status": "broken"}, InputError, "Unknown status filter"),
    ({"module": "digits:two"}, InputError, "must be a number"),
    ({"module": "d" * 300}, InputError, "at most 200"),
])
def test_bad_filters_are_one_sentence(filters: dict[str, str], error: type[Exception], says: str) -> None:
    query = FleetQuery(HubStore("sqlite://"))  # filters are checked before anything is read
    with pytest.raises(error, match=says):
        query.page(FleetFilter(**filters))


def test_page_bounds(tmp_path: Path) -> None:
    query = FleetQuery(HubStore(f"sqlite:///{tmp_path / 'hub.db'}"))
    for limit in (0, 501):
        with pytest.raises(InputError, match="1 to 500"):
            query.page(FleetFilter(), limit=limit)
    with pytest.raises(InputError, match="offset"):
        query.page(FleetFilter(), offset=-1)
    assert query.page(FleetFilter()).counts.devices == 0  # an empty hub
