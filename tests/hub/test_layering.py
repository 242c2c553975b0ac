"""Layered deployments: per module name, highest priority wins; ties go to the newest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edgeship.hub.targeting import Deployment, DeviceFacts, Selection, contributing, parse, select_modules, targets

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
LAB = DeviceFacts("dev-1", {"site": "lab", "ring": "canary"})
FIELD = DeviceFacts("dev-2", {"site": "field"})


def _dep(
    id: str, condition: str, modules: dict[str, str], priority: int = 0, age_minutes: int = 0
) -> Deployment[str]:
    return Deployment(id, priority, T0 + timedelta(minutes=age_minutes), parse(condition), modules)


def test_a_device_gets_the_modules_of_every_deployment_that_targets_it() -> None:
    base = _dep("base", "*", {"telemetry": "telemetry:1"})
    lab = _dep("lab", "tags.site = 'lab'", {"digits": "digits:3"})
    assert select_modules(LAB, [base, lab]) == {
        "digits": Selection("lab", 0, "digits:3"),
        "telemetry": Selection("base", 0, "telemetry:1"),
    }
    assert select_modules(FIELD, [base, lab]) == {"telemetry": Selection("base", 0, "telemetry:1")}


def test_higher_priority_wins_per_module_name_whatever_the_order() -> None:
    base = _dep("base", "tags.site = 'lab'", {"digits": "digits:3", "telemetry": "telemetry:1"}, priority=1)
    canary = _dep("canary", "tags.ring = 'canary'", {"digits": "digits:4"}, priority=10)
    for order in ([base, canary], [canary, base]):
        chosen = select_modules(LAB, order)
        assert chosen["digits"] == Selection("canary", 10, "digits:4")
        assert chosen["telemetry"] == Selection("base", 1, "telemetry:1")


def test_equal_priority_goes_to_the_newest_deployment() -> None:
    old = _dep("old", "*", {"digits": "digits:3"}, priority=5, age_minutes=0)
    new = _dep("new", "*", {"digits": "digits:4"}, priority=5, age_minutes=10)
    assert select_modules(LAB, [new, old])["digits"].deployment_id == "new"
    assert select_modules(LAB, [old, new])["digits"].deployment_id == "new"


def test_equal_priority_and_creation_time_is_broken_by_id_so_devices_never_flap() -> None:
    a = _dep("a", "*", {"digits": "digits:3"})
    b = _dep("b", "*", {"digits": "digits:4"})
    assert select_modules(LAB, [a, b])["digits"].deployment_id == "b"
    assert select_modules(LAB, [b, a])["digits"].deployment_id == "b"


def test_a_higher_priority_deployment_that_does_not_target_the_device_does_not_count() -> None:
    low = _dep("low", "*", {"digits": "digits:3"}, priority=1)
    high = _dep("high", "tags.site = 'field'", {"digits": "digits:9"}, priority=99)
    assert select_modules(LAB, [low, high])["digits"].deployment_id == "low"
    assert not targets(high, LAB) and targets(high, FIELD)


def test_nothing_targets_the_device_gives_an_empty_selection() -> None:
    assert select_modules(FIELD, [_dep("lab", "tags.site = 'lab'", {"digits": "digits:3"})]) == {}
    assert select_modules(FIELD, []) == {}


def test_contributing_lists_only_deployments_that_won_a_module() -> None:
    base = _dep("base", "*", {"digits": "digits:3"}, priority=1)
    override = _dep("override", "*", {"digits": "digits:4"}, priority=2)
    extra = _dep("extra", "*", {"telemetry": "telemetry:1"})
    chosen = select_modules(LAB, [base, override, extra])
    assert contributing(chosen) == ["extra", "override"]
    assert list(chosen) == ["digits", "telemetry"]  # sorted, so documents are stable
