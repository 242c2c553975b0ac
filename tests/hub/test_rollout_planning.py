"""Rollout planning, pure: policies as users type them, wave membership, and the advance/abort table.

No hub, no clock: each case is data in and a decision out, as the engine will call them.
"""

from __future__ import annotations

from collections import Counter

import pytest

from edgeship.errors import InputError
from edgeship.hub.rollouts import (
    DeviceProgress,
    RolloutPolicy,
    classify,
    decide,
    parse_duration,
    parse_waves,
    plan_waves,
    rollout_order,
)

DEVICES = [f"dev-{i:03d}" for i in range(200)]


# -- policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "waves, targeted, sizes",
    [
        ("1,10%,50%,100%", 200, [1, 20, 100, 200]),
        ("1,10%,50%,100%", 6, [1, 3, 6]),  # 10% of 6 rounds up to 1, the same as the first wave: merged
        ("1,3,6", 6, [1, 3, 6]),
        ("1,3,6", 4, [1, 3, 4]),
        ("10%", 50, [5, 50]),  # waves that stop short end with everyone
        ("5", 3, [3]),
        ("1%,10%,100%", 10_000, [100, 1000, 10_000]),
        ("1,10%,50%,100%", 0, [0]),
    ],
)
def test_wave_sizes_are_cumulative_and_end_with_every_device(waves: str, targeted: int, sizes: list[int]) -> None:
    assert RolloutPolicy(waves=parse_waves(waves)).sizes(targeted) == sizes


def test_exponential_waves_grow_by_the_factor() -> None:
    assert RolloutPolicy(exponential=(2, 2.0)).sizes(40) == [2, 6, 14, 30, 40]
    assert RolloutPolicy().sizes(7) == [7]  # no waves: everyone at once, as before rollouts


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,,100%", "neither a device count"),
        ("0,100%", "above 0"),
        ("150%", "at most 100%"),
        ("10%,5%", "must grow"),
        ("5,3", "must grow"),
        ("abc", "neither a device count"),
    ],
)
def test_bad_waves_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_waves(text)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"waves": parse_waves("1,100%"), "exponential": (1, 2.0)}, "either --waves or --exponential"),
        ({"exponential": (0, 2.0)}, "BASE >= 1"),
        ({"exponential": (1, 1.0)}, "FACTOR > 1"),
        ({"spread_by": "site"}, "must name a tag"),
        ({"advance_percent": 120.0}, "between 0 and 100"),
        ({"abort_min": 0}, "at least 1"),
        ({"abort_on": ("exploded",)}, "--abort-on takes"),
    ],
)
def test_bad_policies_are_refused_by_option_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RolloutPolicy(**kwargs)  # type: ignore[arg-type]


def test_durations() -> None:
    assert [parse_duration(t, "--soak") for t in ("30s", "5m", "2h", "1d", "1.5m")] == [30, 300, 7200, 86400, 90]
    with pytest.raises(InputError, match="30s, 5m, 2h or 1d"):
        parse_duration("5 minutes", "--soak")


def test_a_policy_round_trips_through_its_stored_form_and_refuses_unknown_keys() -> None:
    policy = RolloutPolicy(waves=parse_waves("1,10%,100%"), spread_by="tags.site", soak=300, advance_percent=95,
                           approve_each_wave=True, wave_timeout=600, abort_percent=20, abort_min=5,
                           abort_on=("failed", "refused", "timed-out"))
    assert RolloutPolicy.from_dict(policy.to_dict()) == policy
    assert RolloutPolicy.from_dict({"exponential": [2, 2], "soak": "5m"}).soak == 300
    with pytest.raises(InputError, match="unknown keys"):
        RolloutPolicy.from_dict({"wave": "1,100%"})
    with pytest.raises(InputError, match="approveEachWave must be true or false"):
        RolloutPolicy.from_dict({"approveEachWave": "yes"})


# -- wave membership ------------------------------------------------------------------------


def test_membership_is_deterministic_disjoint_and_covers_every_device() -> None:
    policy = RolloutPolicy(waves=parse_waves("1,10%,50%,100%"))
    plan = plan_waves(policy, "lab", DEVICES)
    assert plan == plan_waves(policy, "lab", list(reversed(DEVICES)))  # input order does not matter
    assert [len(w) for w in plan.waves] == [1, 19, 80, 100]
    assert sorted(d for w in plan.waves for d in w) == DEVICES
    assert plan_waves(policy, "other", DEVICES).waves[0] != plan.waves[0]  # another deployment, other canaries


def test_a_device_keeps_its_place_when_others_join_or_leave() -> None:
    before = rollout_order("lab", DEVICES)
    after = rollout_order("lab", [*DEVICES[:150], "newcomer"])
    assert [d for d in after if d != "newcomer"] == [d for d in before if d in DEVICES[:150]]


def test_spread_by_reaches_every_site_in_the_first_waves() -> None:
    tags = {d: {"site": f"site-{i % 4}"} for i, d in enumerate(DEVICES)}
    plan = plan_waves(RolloutPolicy(waves=parse_waves("4,100%"), spread_by="tags.site"), "lab", DEVICES, tags)
    assert Counter(tags[d]["site"] for d in plan.waves[0]) == {f"site-{i}": 1 for i in range(4)}
    unspread = plan_waves(RolloutPolicy(waves=parse_waves("4,100%")), "lab", DEVICES, tags)
    assert sorted(d for w in unspread.waves for d in w) == sorted(d for w in plan.waves for d in w)


def test_a_newcomer_joins_the_wave_of_the_device_ranked_after_it() -> None:
    plan = plan_waves(RolloutPolicy(waves=parse_waves("1,10%,100%")), "lab", DEVICES)
    waves = Counter(plan.wave_for_newcomer("lab", f"new-{i}") for i in range(300))
    assert set(waves) <= {0, 1, 2} and waves[2] > waves[1] > 0  # spread as the original devices were
    planned = plan.waves[1][0]
    assert plan.wave_for_newcomer("lab", planned) == 1


# -- outcomes -------------------------------------------------------------------------------

SOAK = RolloutPolicy(waves=parse_waves("1,100%"), soak=60, wave_timeout=300)


@pytest.mark.parametrize(
    "progress, now, outcome",
    [
        (DeviceProgress(5, issued_at=0), 10, "pending"),
        (DeviceProgress(5, issued_at=0), 301, "timed-out"),
        (DeviceProgress(5, issued_at=0, reported_sequence=4, code=200, running_release=False), 301, "timed-out"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=200, running_release=True, applied_at=10), 30,
         "soaking"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=200, running_release=True, applied_at=10), 70,
         "succeeded"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=500), 20, "failed"),
        (DeviceProgress(5, issued_at=0, reported_sequence=6, code=200, running_release=False), 20, "failed"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=401), 20, "refused"),
        # 409 after the release applied refuses an older copy (a broker node's loss left it retained, ADR 0044):
        # not a refusal of the release; judged by what runs, or pending until the next report
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=409), 20, "pending"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=409), 301, "timed-out"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=409, running_release=True, applied_at=10), 70,
         "succeeded"),
        (DeviceProgress(5, issued_at=0, reported_sequence=6, code=409, running_release=True, applied_at=10), 30,
         "soaking"),
        # ...while a 409 of the release's own document (a sequence jump: too far above the device's floor) is one
        (DeviceProgress(5, issued_at=10, reported_sequence=4, code=409, reported_at=12), 20, "refused"),
        # an agent that refuses a document keeps its older lastAppliedSequence: the time tells
        (DeviceProgress(5, issued_at=10, reported_sequence=4, code=401, reported_at=12), 20, "refused"),
        (DeviceProgress(5, issued_at=10, reported_sequence=4, code=401, reported_at=8), 20, "pending"),
        (DeviceProgress(5, issued_at=10, reported_sequence=4, code=500, reported_at=12), 20, "pending"),
        # 202: accepted, still waiting for an unreachable download host (ADR 0042): pending until the timeout
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=202, running_release=False), 20, "pending"),
        (DeviceProgress(5, issued_at=0, reported_sequence=5, code=202, running_release=False), 301, "timed-out"),
    ],
)
def test_each_report_is_one_outcome(progress: DeviceProgress, now: float, outcome: str) -> None:
    assert classify(progress, SOAK, now) == outcome


# -- decisions ------------------------------------------------------------------------------

SIX = [f"d{i}" for i in range(6)]


def _plan(policy: RolloutPolicy):  # type: ignore[no-untyped-def]
    return plan_waves(policy, "lab", SIX)


def test_the_default_aborts_on_the_first_failed_or_refused_device() -> None:
    policy = RolloutPolicy(waves=parse_waves("1,3,6"))
    plan = _plan(policy)
    canary = plan.waves[0][0]
    decision = decide(policy, plan, 0, {canary: "failed"}, wave_started=0, now=10)
    assert decision.action == "abort" and decision.tripped == (canary,) and "failed" in decision.reason
    assert decide(policy, plan, 0, {canary: "refused"}, wave_started=0, now=10).action == "abort"


def test_offline_devices_do_not_abort_by_default_but_hold_the_wave_for_an_operator() -> None:
    policy = RolloutPolicy(waves=parse_waves("1,3,6"), wave_timeout=300)
    plan = _plan(policy)
    outcomes = {plan.waves[0][0]: "succeeded", **{d: "timed-out" for d in plan.waves[1]}}
    assert decide(policy, plan, 1, outcomes, wave_started=0, now=10).action == "wait"
    held = decide(policy, plan, 1, outcomes, wave_started=0, now=301)
    assert held.action == "waiting-approval" and "2 timed-out" in held.reason
    listed = RolloutPolicy(waves=parse_waves("1,3,6"), abort_on=("timed-out",))
    assert decide(listed, plan, 1, outcomes, wave_started=0, now=10).action == "abort"


def test_waves_advance_on_the_success_share_then_complete() -> None:
    policy = RolloutPolicy(waves=parse_waves("1,3,6"), advance_percent=50, abort_percent=50, abort_min=4)
    plan = _plan(policy)
    done = {d: "succeeded" for d in SIX}
    assert decide(policy, plan, 0, done, wave_started=0, now=1).action == "advance"
    one_of_two = {plan.waves[1][0]: "succeeded", plan.waves[1][1]: "failed", plan.waves[0][0]: "succeeded"}
    assert decide(policy, plan, 1, one_of_two, wave_started=0, now=1).action == "advance"  # 1 of 3 executed failed
    assert decide(policy, plan, 2, done, wave_started=0, now=1).action == "complete"


@pytest.mark.parametrize(
    "failed, executed, action",
    [(1, 3, "wait"), (2, 4, "wait"), (3, 5, "abort"), (1, 1, "wait")],  # abort above 50% once 4 executed
)
def test_abort_criteria_as_aws_iot_jobs_abort_config(failed: int, executed: int, action: str) -> None:
    policy = RolloutPolicy(waves=parse_waves("6"), abort_percent=50, abort_min=4, advance_percent=100)
    plan = _plan(policy)
    outcomes = {d: ("failed" if i < failed else "succeeded") for i, d in enumerate(plan.waves[0][:executed])}
    assert decide(policy, plan, 0, outcomes, wave_started=0, now=1).action == action


def test_approval_between_waves() -> None:
    policy = RolloutPolicy(waves=parse_waves("1,3,6"), approve_each_wave=True)
    plan = _plan(policy)
    done = {d: "succeeded" for d in SIX}
    waiting = decide(policy, plan, 0, done, wave_started=0, now=1)
    assert waiting.action == "waiting-approval" and "approve" in waiting.reason
    assert decide(policy, plan, 0, done, wave_started=0, now=1, approved=True).action == "advance"
