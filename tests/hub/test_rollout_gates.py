"""Health gates (issue 15): parsing what operators type, and judging a device's health. Pure tables."""

from __future__ import annotations

import pytest

from edgeship.errors import InputError
from edgeship.hub.rollouts import RolloutPolicy
from edgeship.hub.rollouts.decide import DeviceProgress, classify
from edgeship.hub.rollouts.gates import Gate, Health, judge, parse_gate


@pytest.mark.parametrize(
    ("text", "gate"),
    [
        ("error_rate <= 1%", Gate("error_rate", 0.01, False, None, 20, "error_rate <= 1%")),
        ("p99_ratio<1.5", Gate("p99_ratio", 1.5, True, None, 20, "p99_ratio<1.5")),
        ("restarts <= 2", Gate("restarts", 2.0, False, None, 20, "restarts <= 2")),
        ("error_rate <= 0.5% over 5m min 50", Gate("error_rate", 0.005, False, 300.0, 50,
                                                   "error_rate <= 0.5% over 5m min 50")),
    ],
)
def test_gates_parse(text: str, gate: Gate) -> None:
    assert parse_gate(text) == gate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency <= 3", "not a gate|unknown metric"),
        ("error_rate <= 1", "percentage"),
        ("error_rate <= 101%", "percentage"),
        ("p99_ratio <= 150%", "only error_rate"),
        ("error_rate >= 1%", "not a gate"),
        ("error_rate <= 1% min 0", "at least 1"),
        ("error_rate <= 1%; rm -rf /", "not a gate"),
    ],
)
def test_bad_gates_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_gate(text)


def test_a_policy_keeps_its_gates_and_aborts_on_unhealthy_by_default() -> None:
    policy = RolloutPolicy.from_dict({"waves": "1,100%", "gates": ["error_rate <= 1%", "restarts <= 2"]})
    assert "unhealthy" in policy.abort_on
    again = RolloutPolicy.from_dict(policy.to_dict())
    assert again == policy and again.to_dict()["gates"] == ["error_rate <= 1%", "restarts <= 2"]
    with pytest.raises(InputError, match="list of gates"):
        RolloutPolicy.from_dict({"waves": "1", "gates": [3]})


ERRORS = parse_gate("error_rate <= 1%")
P99 = parse_gate("p99_ratio <= 1.5")
RESTARTS = parse_gate("restarts <= 2")


def one(health: Health) -> dict[str, dict[float | None, Health]]:
    return {"digits": {None: health}}


@pytest.mark.parametrize(
    ("gates", "health", "verdict"),
    [
        ((ERRORS,), Health(requests=100, server_errors=1), "pass"),
        ((ERRORS,), Health(requests=100, server_errors=2), "breach"),
        ((ERRORS,), Health(requests=10, server_errors=10), "no-data"),  # fewer than min 20 requests
        ((ERRORS,), Health(), "no-data"),  # no traffic is never healthy
        ((P99,), Health(requests=50, p99_ms=10, baseline_requests=50, baseline_p99_ms=9), "pass"),
        ((P99,), Health(requests=50, p99_ms=100, baseline_requests=50, baseline_p99_ms=9), "breach"),
        ((P99,), Health(requests=50, p99_ms=100), "no-data"),  # nothing to compare with
        ((RESTARTS,), Health(restarts=2), "pass"),
        ((RESTARTS,), Health(restarts=3), "breach"),
        ((RESTARTS,), Health(), "no-data"),
        ((ERRORS, RESTARTS), Health(restarts=5), "breach"),  # a breach wins over missing data
    ],
)
def test_judging_a_device(gates: tuple[Gate, ...], health: Health, verdict: str) -> None:
    assert judge(gates, one(health))[0] == verdict


def test_p99_judges_only_once_the_device_soaked() -> None:
    slow = one(Health(requests=50, p99_ms=100, baseline_requests=50, baseline_p99_ms=9))
    assert judge((P99,), slow, soaked=False) == ("pass", "")
    assert judge((P99,), slow, soaked=True)[0] == "breach"
    assert judge((ERRORS,), one(Health(requests=50, server_errors=50)), soaked=False)[0] == "breach"


def test_a_breach_names_the_gate_and_the_numbers() -> None:
    verdict, reason = judge((ERRORS,), one(Health(requests=200, server_errors=200)))
    assert verdict == "breach" and reason == "digits: error_rate 100% (200 of 200) breaches 'error_rate <= 1%'"


SOAK = RolloutPolicy.from_dict({"waves": "1", "soak": 60})


@pytest.mark.parametrize(
    ("health", "now", "outcome"),
    [
        ("breach", 20, "unhealthy"),  # at once, during the soak
        ("no-data", 20, "soaking"),
        ("no-data", 80, "no-data"),  # soaked without enough data: not a success
        ("pass", 80, "succeeded"),
        (None, 80, "succeeded"),  # no gates
    ],
)
def test_gates_in_the_outcome(health: str | None, now: float, outcome: str) -> None:
    progress = DeviceProgress(5, issued_at=0, reported_sequence=5, code=200, running_release=True, applied_at=10,
                              health=health)  # type: ignore[arg-type]
    assert classify(progress, SOAK, now) == outcome
