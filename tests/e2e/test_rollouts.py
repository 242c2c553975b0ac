"""Staged rollouts to real agents: waves advance, a failing release aborts in wave 1 and reaches no one else.

One fleet for the module (``rollout_fleet.py``): six ``edgeship agent run`` processes
with the process runtime on a real Mosquitto, the hub in this process (swapped for an
``edgeship hub serve`` process and SIGKILLed in one test), releases v1 and v2 of the
demo's digits model and one whose ``init()`` raises. A base deployment runs v1
everywhere; each test rolls out the good release the fleet does not run, at a higher
priority than the deployments before it, so each starts from what the one before left.

Wave membership is the rollout's own (``Rollouts.members``). The invariant every
test polls (:class:`Confined`): the release is offered to no device whose wave is not
out, and devices whose wave is not out keep the previous version — checked on every
document the broker delivered (``DocumentLog``), not only on the final state.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from rollout_fleet import DEVICES, GROUP, MODULE, WAIT, RolloutFleet, build_fleet, score

from edgeship.hub.client import HubClient
from edgeship.hub.rollouts import RolloutPolicy, parse_waves, plan_waves
from edgeship.hub.rollouts.report import RolloutView
from edgeship.hub.services import ModuleRefSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SOAK = 4.0  # seconds a wave soaks: the test sees each phase in that window, even on a loaded machine
QUICK_SOAK = 1.0  # seconds, where approvals hold the phases instead
TICKS = 3.0  # seconds: three passes of the engine (HubConfig.rollout_interval, 1 s)
NEVER = 120.0  # a wave timeout no healthy wave reaches here


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutFleet]:
    made = build_fleet(tmp_path_factory.mktemp("rollouts"))
    try:
        yield made
    finally:
        made.close()


def _create(fleet: RolloutFleet, name: str, version: int, priority: int, policy: RolloutPolicy,
            condition: str = GROUP) -> None:  # fmt: skip
    fleet.services.deployments.create_deployment(name, condition, [ModuleRefSpec(MODULE, version)], priority,
                                                 rollout=policy, actor="test")  # fmt: skip


def _policy(waves: str = "1,3,6", **options: Any) -> RolloutPolicy:
    return RolloutPolicy(waves=parse_waves(waves), **{"soak": SOAK, "wave_timeout": NEVER, **options})


def _show(fleet: RolloutFleet, name: str) -> RolloutView:
    return fleet.services.rollouts.show(name)


def _sizes(members: Mapping[str, int]) -> list[int]:
    counts = Counter(members.values())
    return [counts[w] for w in range(1, max(counts) + 1)]


def _upto(members: Mapping[str, int], wave: int) -> set[str]:
    return {d for d, w in members.items() if w <= wave}


class Confined:
    """Asserts, each time it is called, that the release went no further than the waves that are out.

    Reads the broker's documents and the devices' reports first and the rollout last:
    waves only move forward, so anything seen before a view that says wave ``k`` was
    sent while the rollout was at wave ``k`` or before.
    """

    def __init__(self, fleet: RolloutFleet, name: str, new: int, old: int, since: int,
                 members: Mapping[str, int], offline: frozenset[str] = frozenset()) -> None:  # fmt: skip
        self.fleet, self.name, self.new, self.old, self.since = fleet, name, new, old, since
        self.members = dict(members)  # devices outside the target are not members: never offered
        self.offline = offline
        self.view: RolloutView | None = None

    def __call__(self) -> None:
        offered = self.fleet.docs.offered(self.new, self.since)
        running = self.fleet.versions_now()
        view = self.view = _show(self.fleet, self.name)
        out = len(view.waves) if view.state == "completed" else view.wave
        early = sorted(d for d in offered if self.members.get(d, len(view.waves) + 1) > out)
        assert not early, (
            f"{self.name}: {early} were delivered a document naming {MODULE}:{self.new} while the rollout was "
            f"{view.state} at wave {out} and their waves are {[self.members.get(d) for d in early]} "
            f"(members {self.members})"
        )
        if view.state == "aborted":
            return
        ahead = {d: v for d, v in running.items()
                 if self.members.get(d, len(view.waves) + 1) > out and d not in self.offline and v != self.old}
        assert not ahead, f"{self.name} at wave {out} ({view.state}): later waves' devices run {ahead}, not v{self.old}"
        assert not self.fleet.docs.errors, f"undecodable or unverifiable documents: {self.fleet.docs.errors}"

    def phase(self, wave: int, state: str = "rolling-out") -> RolloutView:
        """The rollout once every device of waves 1..``wave`` runs the release and reports it."""
        out = _upto(self.members, wave)
        self.fleet.wait(f"{self.name}: waves 1-{wave} ({sorted(out)}) to run v{self.new}",
                        lambda: all(self.fleet.settled(d, self.new) for d in out), during=self)  # fmt: skip
        self()
        view = self.view
        assert view is not None
        assert (view.state, view.wave) == (state, wave), (
            f"{self.name}: expected {state} at wave {wave} while wave {wave} soaks ({SOAK:g} s), got {view.state} at "
            f"wave {view.wave}: {view.reason}"
        )
        assert view.waiting_for, f"'deployment show' does not say what {self.name} waits for: {view}"
        running = self.fleet.versions_now()
        assert {d for d, v in running.items() if v == self.new} == out, f"wave {wave} out, devices run {running}"
        for index, shown in enumerate(view.waves, start=1):
            members = sum(1 for w in self.members.values() if w == index)
            assert shown.targeted == members, f"wave {index} targets {shown.targeted}, not {members}: {view}"
            if index < wave:
                assert (shown.status, shown.succeeded) == ("done", members), f"wave {index}: {shown}"
            elif index == wave:
                assert (shown.status, shown.applied) == ("current", members), f"wave {index}: {shown}"
            else:
                assert (shown.status, shown.applied) == ("next", 0), f"wave {index}: {shown}"
        return view

    def until(self, state: str, wave: int | None = None, timeout: float = WAIT) -> RolloutView:
        def reached() -> bool:
            view = _show(self.fleet, self.name)
            assert view.state != "aborted" or state == "aborted", f"{self.name} aborted: {view.reason} {view.tripped}"
            return view.state == state and (wave is None or view.wave == wave)

        self.fleet.wait(f"{self.name} to be {state}" + (f" at wave {wave}" if wave else ""), reached,
                        timeout=timeout, during=self)  # fmt: skip
        view = _show(self.fleet, self.name)
        self.view = view
        return view


def _completed(fleet: RolloutFleet, guard: Confined) -> RolloutView:
    view = guard.until("completed")
    fleet.wait(f"every targeted device to run v{guard.new}",
               lambda: all(fleet.settled(d, guard.new) for d in guard.members if d not in guard.offline))  # fmt: skip
    assert view.waiting_for == "", view
    return view


def _latest_version(fleet: RolloutFleet, device: str) -> int | None:
    """The module version named by the newest document the broker delivered to ``device``."""
    latest = fleet.docs.latest(device)
    return latest.modules.get(MODULE) if latest else None


def _actions(fleet: RolloutFleet, name: str) -> list[tuple[str, str]]:
    return [(e.action, e.actor) for e in fleet.services.rollouts.events(name)]


def _releases(fleet: RolloutFleet) -> tuple[int, int]:
    """(the good release every device runs now, the other one): each test rolls out the one not running."""
    running = fleet.versions_now()
    assert len(set(running.values())) == 1, f"the fleet does not run one release before the test: {running}"
    old, v1, v2 = running[DEVICES[0]], fleet.versions["v1"], fleet.versions["v2"]
    assert old in (v1, v2), running
    return old, v2 if old == v1 else v1


def test_waves_1_3_6_go_out_one_after_another_and_complete(fleet: RolloutFleet) -> None:
    name, (old, new) = "waves", _releases(fleet)
    since = fleet.docs.mark()
    _create(fleet, name, new, 10, _policy())
    members = fleet.services.rollouts.members(name)
    assert set(members) == set(DEVICES) and _sizes(members) == [1, 2, 3], members
    first = _show(fleet, name)
    assert (first.state, first.wave, [w.targeted for w in first.waves]) == ("rolling-out", 1, [1, 2, 3]), first
    assert [w.status for w in first.waves] == ["current", "next", "next"], first

    guard = Confined(fleet, name, new, old, since, members)
    for wave in (1, 2, 3):
        guard.phase(wave)
    view = _completed(fleet, guard)
    assert [(w.targeted, w.succeeded, w.failed) for w in view.waves] == [(1, 1, 0), (2, 2, 0), (3, 3, 0)], view

    # REST says what the service says ('deployment show --json' is checked against the hub process below)
    with HubClient(fleet.api_url, fleet.token) as client:
        rest = client.rollout(name)
    assert {k: rest[k] for k in ("state", "wave", "waves", "tripped")} == {
        k: view.to_dict()[k] for k in ("state", "wave", "waves", "tripped")}, rest
    actions = [a for a, _ in _actions(fleet, name)]
    assert actions[0] == "started" and actions[-1] == "completed" and actions.count("wave-started") == 2, actions
    assert [w.status for w in view.waves] == ["done", "done", "done"], (
        f"a completed rollout's 'deployment show' must mark every wave done: {[(w.wave, w.status) for w in view.waves]}"
    )


def test_a_release_whose_init_fails_aborts_in_wave_1_and_reaches_no_other_device(fleet: RolloutFleet) -> None:
    name, (old, _), bad = "init-fails", _releases(fleet), fleet.versions["bad"]
    before = {d: score((fleet.module(d) or {})["port"]) for d in DEVICES}
    since = fleet.docs.mark()
    _create(fleet, name, bad, 20, _policy())
    members = fleet.services.rollouts.members(name)
    (exposed,) = _upto(members, 1)
    guard = Confined(fleet, name, bad, old, since, members)
    view = guard.until("aborted", timeout=WAIT)
    assert view.wave == 1 and view.tripped == (exposed,), view
    assert (view.waves[0].failed, sum(w.applied for w in view.waves)) == (1, 0), view
    assert view.reason and not view.rolled_back, view  # layering without it gives the previous release: no pin

    # the device rolled back by itself (500), then the hub re-issued it a document without the release
    fleet.wait(f"{exposed} to be re-issued and apply a document without v{bad}",
               lambda: fleet.settled(exposed, old) and _latest_version(fleet, exposed) == old)
    module = fleet.module(exposed) or {}
    assert score(module["port"]) == before[exposed], f"{exposed} does not serve v{old}'s answers again"
    time.sleep(TICKS)  # engine passes after the abort: nothing more may go out
    guard()
    assert fleet.docs.offered(bad, since) == {exposed}, (
        f"devices outside wave 1 were delivered v{bad}: {sorted(fleet.docs.offered(bad, since) - {exposed})}"
    )
    assert all(fleet.settled(d, old) for d in DEVICES), fleet.versions_now()
    actions = _actions(fleet, name)
    assert actions[0] == ("started", "test") and actions[-1] == ("aborted", "hub"), actions
    assert "wave-started" not in [a for a, _ in actions], actions


def test_with_approve_each_wave_the_rollout_waits_after_each_wave_until_approved(fleet: RolloutFleet) -> None:
    name, (old, new) = "approved", _releases(fleet)
    since = fleet.docs.mark()
    _create(fleet, name, new, 30, _policy(approve_each_wave=True, soak=QUICK_SOAK))
    members = fleet.services.rollouts.members(name)
    guard = Confined(fleet, name, new, old, since, members)
    for wave in (1, 2):
        view = guard.until("waiting-approval", wave)
        assert view.waves[wave - 1].succeeded == _sizes(members)[wave - 1] and view.waiting_for, view
        time.sleep(TICKS)  # engine passes go by: it waits for the operator
        guard()
        assert guard.view is not None and (guard.view.state, guard.view.wave) == ("waiting-approval", wave)
        assert {d for d, v in fleet.versions_now().items() if v == new} == _upto(members, wave)
        after = fleet.services.rollouts.approve(name, actor="test", reason=f"wave {wave} looks good")
        assert (after.state, after.wave) == ("rolling-out", wave + 1), after
    _completed(fleet, guard)
    approvals = [e for e in fleet.services.rollouts.events(name) if e.action == "wave-started"]
    assert [(e.actor, e.reason) for e in approvals] == [("test", "wave 1 looks good"), ("test", "wave 2 looks good")]


def test_a_paused_rollout_does_not_advance_and_resume_goes_on(fleet: RolloutFleet) -> None:
    name, (old, new) = "paused", _releases(fleet)
    since = fleet.docs.mark()
    _create(fleet, name, new, 40, _policy())
    members = fleet.services.rollouts.members(name)
    guard = Confined(fleet, name, new, old, since, members)
    guard.phase(1)
    paused = fleet.services.rollouts.pause(name, actor="test", reason="a dashboard looks odd")
    assert (paused.state, paused.wave) == ("paused", 1) and "resume" in paused.waiting_for, paused
    hold = time.monotonic() + SOAK + TICKS
    while time.monotonic() < hold:  # wave 1 soaked long ago: only the pause holds wave 2 back
        guard()
        assert guard.view is not None and (guard.view.state, guard.view.wave) == ("paused", 1), guard.view
        time.sleep(0.3)
    held = _show(fleet, name)
    assert (held.state, held.waves[0].succeeded, held.waves[1].applied) == ("paused", 1, 0), held
    resumed = fleet.services.rollouts.resume(name, actor="test")
    assert resumed.state == "rolling-out", resumed
    _completed(fleet, guard)
    actions = _actions(fleet, name)
    assert ("paused", "test") in actions and ("resumed", "test") in actions, actions
    paused_event = next(e for e in fleet.services.rollouts.events(name) if e.action == "paused")
    assert paused_event.reason == "a dashboard looks odd"


def test_a_hub_killed_mid_rollout_resumes_in_the_same_phase_and_completes(fleet: RolloutFleet) -> None:
    name, (old, new) = "killed", _releases(fleet)
    policy = _policy(approve_each_wave=True, soak=QUICK_SOAK)
    planned = {d: w + 1 for w, wave in enumerate(plan_waves(policy, name, DEVICES).waves) for d in wave}
    since = fleet.docs.mark()
    fleet.stop_hub()
    hub = fleet.hub_process("hub-killed").start()
    client = HubClient(fleet.api_url, fleet.token)
    try:
        client.create_deployment(name, GROUP, [{"name": MODULE, "version": new}], 50, rollout=policy.to_dict())

        def rollout_is(state: str, wave: int) -> bool:
            shown = client.rollout(name)
            assert shown["state"] in ("rolling-out", "waiting-approval"), shown
            return (shown["state"], shown["wave"]) == (state, wave)

        fleet.wait("wave 1 to wait for approval (hub process)", lambda: rollout_is("waiting-approval", 1))
        cli = subprocess.run(
            [sys.executable, "-m", "edgeship", "deployment", "show", name, "--json", "--hub", fleet.api_url,
             "--token", fleet.token], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        shown = json.loads(cli.stdout)["rollout"]
        assert (shown["state"], shown["wave"], [w["applied"] for w in shown["waves"]]) == (
            "waiting-approval", 1, [1, 0, 0]), shown
        client.rollout_action(name, "approve", reason="wave 1 looks good")
        wave2 = _upto(planned, 2)
        fleet.wait("wave 2's documents", lambda: fleet.docs.offered(new, since) == wave2)
        hub.kill()  # SIGKILL while wave 2 installs
        assert hub.process is not None and hub.process.returncode == -signal.SIGKILL
    finally:
        client.close()
        if hub.process is not None and hub.process.poll() is None:
            hub.stop()
        fleet.start_hub()  # the same workspace, database and port (and the next tests' hub, whatever happened)

    view = _show(fleet, name)
    assert view.wave == 2 and view.state in ("rolling-out", "waiting-approval"), view
    members = fleet.services.rollouts.members(name)
    assert members == planned, f"the stored waves {members} are not the planned ones {planned}"
    guard = Confined(fleet, name, new, old, since, members)
    view = guard.until("waiting-approval", 2)
    assert {d for d, v in fleet.versions_now().items() if v == new} == wave2
    fleet.services.rollouts.approve(name, actor="test")
    _completed(fleet, guard)
    actions = _actions(fleet, name)
    assert actions[:3] == [("started", "rollout-tests"), ("waiting-approval", "hub"), ("wave-started", "rollout-tests")
                           ], f"the events before the kill (creation and approval over REST) are not kept: {actions}"
    assert [a for a, _ in actions].count("wave-started") == 2, f"a wave started again after the restart: {actions}"


def _split_for_newcomers(policy: RolloutPolicy) -> tuple[str, str, str]:
    """A deployment name and two devices such that, planned over the other four, one newcomer falls in wave 1
    and the other in the last wave (the rank rule of ``WavePlan.wave_for_newcomer``)."""
    for index, (early, late) in itertools.product(range(500), itertools.permutations(DEVICES, 2)):
        name = f"retag-{index}"
        plan = plan_waves(policy, name, [d for d in DEVICES if d not in (early, late)])
        if plan.wave_for_newcomer(name, early) == 0 and plan.wave_for_newcomer(name, late) == len(plan.waves) - 1:
            return name, early, late
    raise AssertionError("no deployment name splits the newcomers over the first and the last wave")


def test_a_device_retagged_into_the_target_mid_rollout_gets_what_its_wave_is_given(fleet: RolloutFleet) -> None:
    old, new = _releases(fleet)
    policy = _policy(approve_each_wave=True, soak=QUICK_SOAK)
    name, early, late = _split_for_newcomers(policy)
    for device in DEVICES:
        fleet.services.fleet.update_tags(device, {"group": "rollouts", "ring": "out" if device in (early, late)
                                                  else "in"})  # fmt: skip
    since = fleet.docs.mark()
    _create(fleet, name, new, 60, policy, condition=f"{GROUP} AND tags.ring = 'in'")
    members = fleet.services.rollouts.members(name)
    assert set(members) == set(DEVICES) - {early, late} and _sizes(members) == [1, 2, 1], members
    guard = Confined(fleet, name, new, old, since, members)
    guard.until("waiting-approval", 1)

    guard.members = {**members, early: 1, late: 3}  # the waves their ranks give them (_split_for_newcomers)
    for device in (early, late):
        fleet.services.fleet.update_tags(device, {"group": "rollouts", "ring": "in"})
    fleet.wait(f"{early} (joins wave 1, which is out) to run v{new}", lambda: fleet.settled(early, new), during=guard)
    joined = fleet.services.rollouts.members(name)
    assert joined == guard.members, f"newcomers {early} and {late} were given waves {joined}, not {guard.members}"
    time.sleep(TICKS)
    guard()
    assert fleet.settled(late, old) and late not in fleet.docs.offered(new, since), (
        f"{late} joined wave 3 while wave 1 waits for approval, yet it runs v{fleet.version(late)}")
    view = guard.view
    assert view is not None and (view.state, view.wave) == ("waiting-approval", 1), view
    assert [w.targeted for w in view.waves] == [2, 2, 2], view

    fleet.services.rollouts.approve(name, actor="test")
    guard.until("waiting-approval", 2)
    assert fleet.settled(late, old), f"{late} (wave 3) runs v{fleet.version(late)} while wave 2 waits"
    fleet.services.rollouts.approve(name, actor="test")
    _completed(fleet, guard)
    assert fleet.settled(late, new)


def test_an_offline_device_times_out_without_aborting_the_rollout(fleet: RolloutFleet) -> None:
    # Wave 2 (two devices) advances at 50% once its online device has soaked (apply + 10 s < 22 s: installs take
    # 2-12 s on a loaded machine); wave 3 takes as long again, so the offline device's 22 s run out while the
    # rollout is still going.
    name, (old, new) = "offline", _releases(fleet)
    since = fleet.docs.mark()
    _create(fleet, name, new, 70, _policy(soak=10.0, wave_timeout=22.0, advance_percent=50))
    members = fleet.services.rollouts.members(name)
    offline = min(d for d, w in members.items() if w == 2)
    fleet.stop_agent(offline)
    assert offline not in fleet.docs.offered(new, since), "wave 2 went out before the device could be stopped"
    guard = Confined(fleet, name, new, old, since, members, offline=frozenset({offline}))

    def timed_out() -> bool:
        guard()
        view = guard.view
        assert view is not None and view.state != "aborted", f"an offline device aborted the rollout: {view}"
        assert view.state != "completed" or view.waves[1].timed_out == 1, (
            f"the rollout completed before {offline}'s 22 s ran out: wave 3 took less than the timeout, so this "
            f"test's timing (apply + soak < timeout < 2 x (apply + soak)) does not hold here: {view}"
        )
        return view.waves[1].timed_out == 1

    fleet.wait(f"{offline} to time out in wave 2", timed_out, timeout=WAIT)
    view = guard.view
    assert view is not None and view.state == "rolling-out" and view.wave == 3, (
        f"expected wave 3 rolling out when {offline} timed out in wave 2 (if wave 2 waits for approval, its online "
        f"device took over 12 s to install here): {view}"
    )
    view = _completed(fleet, guard)
    assert (view.waves[1].succeeded, view.waves[1].timed_out) == (1, 1), view
    assert "aborted" not in [a for a, _ in _actions(fleet, name)]

    fleet.start_agent(offline)  # back online, it takes the retained document of its wave
    fleet.wait(f"{offline} to run v{new} once back", lambda: fleet.settled(offline, new))


def test_over_the_whole_module_only_wave_1_was_ever_offered_the_failing_release(fleet: RolloutFleet) -> None:
    """Aborted stays aborted: no later rollout, restart, re-tag or re-issue brought the failing release back."""
    if "init-fails" not in {d.id for d in fleet.services.deployments.list_deployments()}:
        test_a_release_whose_init_fails_aborts_in_wave_1_and_reaches_no_other_device(fleet)  # run alone: make it
    first_wave = _upto(fleet.services.rollouts.members("init-fails"), 1)
    assert fleet.docs.offered(fleet.versions["bad"]) == first_wave, (
        f"devices outside wave 1 {sorted(first_wave)} were delivered the failing release: "
        f"{sorted(fleet.docs.offered(fleet.versions['bad']) - first_wave)}"
    )
    assert _show(fleet, "init-fails").state == "aborted"
    assert not fleet.docs.errors, fleet.docs.errors
