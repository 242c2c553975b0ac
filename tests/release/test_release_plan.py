"""The pure decisions of a release: the NAME-vN naming, which version a pass releases, priorities, pruning."""

from __future__ import annotations

import pytest

from edgeship.errors import InputError
from edgeship.release.plan import ReleaseInfo, choose_version, next_priority, prune, release_name, release_version


def rel(version: int, priority: int = 0, rollout: str | None = "completed") -> ReleaseInfo:
    return ReleaseInfo(release_name("lab", version), version, priority, "tags.site = 'lab'", (("m", version),),
                       rollout)


def test_a_release_is_named_after_the_deployment_and_the_model_version() -> None:
    assert release_name("digits-lab", 3) == "digits-lab-v3"
    assert release_version("digits-lab", "digits-lab-v3") == 3
    for other in ("digits-lab", "digits-lab-v", "digits-lab-v0", "digits-lab-v3x", "digits-lab-v-1", "other-v3",
                  "digits-lab-v3-v4x", "xdigits-lab-v3"):
        assert release_version("digits-lab", other) is None, other
    assert release_version("a.b", "aXb-v1") is None  # the name is matched literally, not as a pattern


def test_latest_picks_the_newest_version_not_released() -> None:
    assert choose_version("m", [1, 2, 3], released=[1]).version == 3
    assert choose_version("m", [1, 2, 3], released=[]).version == 3


def test_a_version_is_released_once() -> None:
    choice = choose_version("m", [1, 2, 3], released=[3])
    assert choice.version is None and choice.reason == "m:3 is released already"
    explicit = choose_version("m", [1, 2, 3], released=[2, 3], wanted=2)
    assert explicit.version is None and explicit.reason == "m:2 is released already"


def test_latest_never_goes_back_but_an_explicit_version_may() -> None:
    """The newest v4 was deleted from the registry after its release: latest (v3) is not released behind it."""
    choice = choose_version("m", [1, 2, 3], released=[1, 4])
    assert choice.version is None and "older than the release of m:4" in choice.reason
    assert choose_version("m", [1, 2, 3], released=[1, 4], wanted=2).version == 2  # a rollback, asked for


def test_nothing_matches_and_an_unknown_version() -> None:
    assert choose_version("m", [], released=[]).reason == "no version of m matches"
    with pytest.raises(InputError, match=r"m:7 is not registered or does not carry the --tag values"):
        choose_version("m", [1, 2], released=[], wanted=7)


def test_each_release_is_above_every_earlier_one() -> None:
    assert next_priority(10, []) == 10
    assert next_priority(10, [rel(1, 10), rel(2, 11)]) == 12
    assert next_priority(50, [rel(1, 10), rel(2, 11)]) == 50  # a raised -p wins
    assert next_priority(0, [rel(5, 3), rel(2, 20)]) == 21  # above the highest, whatever its version


def test_prune_keeps_the_newest_completed_releases() -> None:
    releases = [rel(1), rel(2), rel(3), rel(4)]
    assert [r.version for r in prune(releases, keep=1)] == [1, 2, 3]
    assert [r.version for r in prune(releases, keep=2)] == [1, 2]
    assert prune(releases, keep=4) == []


def test_prune_never_removes_the_fallback_of_a_release_still_rolling_out_or_aborted() -> None:
    rolling = [rel(1), rel(2), rel(3, rollout="rolling-out")]
    assert [r.version for r in prune(rolling, keep=1)] == [1]  # v2 is what an abort of v3 falls back to
    aborted = [rel(1), rel(2), rel(3, rollout="aborted")]
    assert [r.version for r in prune(aborted, keep=1)] == [1]  # the fleet is back on v2: it stays
    paused_old = [rel(1, rollout="paused"), rel(2), rel(3)]
    assert [r.version for r in prune(paused_old, keep=1)] == [2]  # a rollout that still runs is never deleted


def test_prune_removes_old_aborted_releases_and_counts_at_once_releases_as_completed() -> None:
    releases = [rel(1, rollout="aborted"), rel(2, rollout=None), rel(3, rollout=None)]
    assert [r.version for r in prune(releases, keep=2)] == [1]
    assert prune([rel(1, rollout="rolling-out")], keep=1) == []
    with pytest.raises(InputError, match="at least 1"):
        prune(releases, keep=0)
