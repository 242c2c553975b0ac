"""The plan runner: ordered execution, per-command cool-off on a fake clock, blue/green undo."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from edgeship.agent.decide.plan import Command, CurrentState, DesiredModule, DesiredState, RunningService, plan
from edgeship.agent.decide.report import build_report, overall_status
from edgeship.agent.decide.runner import CoolOff, PlanRunner, Superseded
from edgeship.errors import RuntimeFailure, UnreachableError

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
LOCK = "sha256:" + "11" * 32


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Executor:
    """Records every command; fails the ones named in ``failing`` (by id) with a message."""

    failing: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    superseded: set[str] = field(default_factory=set)  # command ids stopped for newer desired state
    unreachable: set[str] = field(default_factory=set)  # command ids whose host is down

    def execute(self, command: Command) -> None:
        self.log.append(command.id)
        if command.id in self.superseded:
            raise Superseded("a newer desired message arrived")
        if command.id in self.unreachable:
            raise UnreachableError("http://hub/blobs/x: connection refused")
        if command.id in self.failing:
            raise RuntimeFailure(self.failing[command.id])


def module(name: str = "digits", version: int = 2) -> DesiredModule:
    return DesiredModule(name, version, f"sha256:{name}-{version}", LOCK, f"/b/{name}", f"sha256:b-{name}")


OLD = RunningService("digits.a", "digits", 1, "sha256:digits-1", LOCK, "running", port=5001)
UPDATE = plan(DesiredState(7, {"digits": module()}), CurrentState(NOW, {"digits.a": OLD}, {"digits": "digits.a"}))


def test_a_healthy_update_runs_every_command_in_order() -> None:
    executor = Executor()
    result = PlanRunner(executor, Clock()).run(7, UPDATE)
    assert result.ok and executor.log == [c.id for c in UPDATE]
    assert result.outcomes["digits"].ok


def test_failed_health_check_removes_the_candidate_and_keeps_the_old_module() -> None:
    executor = Executor(failing={"health_check:digits.b": "GET / answered 500: init() raised ValueError"})
    result = PlanRunner(executor, Clock()).run(7, UPDATE)
    assert executor.log == [
        "check_space:digits.b",
        "download:digits.b:bundle",
        "verify:digits.b",
        "install:digits.b",
        "start_candidate:digits.b",
        "health_check:digits.b",
        "stop:digits.b",  # undo of start_candidate
        "remove:digits.b",  # undo of install
    ]
    outcome = result.outcomes["digits"]
    assert not result.ok and outcome.rolled_back and outcome.failed_command == "health_check:digits.b"
    assert outcome.error == "health_check of digits.b failed: GET / answered 500: init() raised ValueError"
    assert "stop:digits.a" not in executor.log  # the old slot was never touched


def test_failure_after_the_switch_undoes_nothing() -> None:
    executor = Executor(failing={"stop:digits.a": "container is stuck"})
    result = PlanRunner(executor, Clock()).run(7, UPDATE)
    assert executor.log[-1] == "stop:digits.a" and "remove:digits.b" not in executor.log
    assert not result.outcomes["digits"].rolled_back


def test_a_failing_download_is_not_retried_until_its_cool_off_has_passed() -> None:
    clock = Clock()
    executor = Executor(failing={"download:digits.b:bundle": "connection reset"})
    runner = PlanRunner(executor, clock, CoolOff(base=5, cap=60))
    runner.run(7, UPDATE)
    assert runner.failures("download:digits.b:bundle") == 1
    clock.now += 4.9
    result = runner.run(7, UPDATE)
    assert executor.log.count("download:digits.b:bundle") == 1
    assert result.outcomes["digits"].cooling_off and result.outcomes["digits"].retry_at == 1005.0
    clock.now += 0.1
    runner.run(7, UPDATE)
    assert executor.log.count("download:digits.b:bundle") == 2
    assert runner.failures("download:digits.b:bundle") == 2
    clock.now += 9.9  # second failure: 10 s
    runner.run(7, UPDATE)
    assert executor.log.count("download:digits.b:bundle") == 2
    clock.now += 0.1
    runner.run(7, UPDATE)
    assert executor.log.count("download:digits.b:bundle") == 3


def test_cool_off_is_exponential_and_capped() -> None:
    assert [CoolOff(base=5, cap=60).delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_a_new_sequence_resets_the_cool_off() -> None:
    clock = Clock()
    executor = Executor(failing={"download:digits.b:bundle": "connection reset"})
    runner = PlanRunner(executor, clock)
    runner.run(7, UPDATE)
    runner.run(7, UPDATE)
    assert executor.log.count("download:digits.b:bundle") == 1
    runner.run(8, UPDATE)
    assert executor.log.count("download:digits.b:bundle") == 2


def test_success_clears_a_commands_failure_count() -> None:
    clock = Clock()
    executor = Executor(failing={"download:digits.b:bundle": "reset"})
    runner = PlanRunner(executor, clock, CoolOff(base=1, cap=1))
    runner.run(7, UPDATE)
    executor.failing.clear()
    clock.now += 1
    assert runner.run(7, UPDATE).ok and runner.failures("download:digits.b:bundle") == 0


def test_one_failing_module_does_not_stop_the_others() -> None:
    commands = plan(DesiredState(7, {"a": module("a"), "b": module("b")}), CurrentState(NOW))
    executor = Executor(failing={"install:a.a": "no space left on device"})
    result = PlanRunner(executor, Clock()).run(7, commands)
    assert not result.outcomes["a"].ok and result.outcomes["b"].ok
    assert "switch:b.a" in executor.log and "start_candidate:a.a" not in executor.log
    assert executor.log[executor.log.index("install:a.a") + 1] == "check_space:b.a"  # nothing to undo


def test_a_superseded_download_stops_the_run_without_a_failure_or_a_cool_off() -> None:
    commands = plan(DesiredState(7, {"a": module("a"), "b": module("b")}), CurrentState(NOW))
    executor = Executor(superseded={"download:b.a:bundle"})
    clock = Clock()
    runner = PlanRunner(executor, clock)
    result = runner.run(7, commands)
    assert result.superseded and result.outcomes["a"].ok and "b" not in result.outcomes
    assert executor.log[-2:] == ["check_space:b.a", "download:b.a:bundle"]  # nothing after it ran
    assert runner.failures("download:b.a:bundle") == 0
    executor.superseded.clear()
    again = runner.run(7, commands)  # at once, no cool-off to wait out
    assert again.ok and not again.superseded and executor.log[-1] == "switch:b.a"


def test_a_failing_undo_is_reported_and_the_rest_of_the_undo_still_runs() -> None:
    executor = Executor(failing={"health_check:digits.b": "unhealthy", "stop:digits.b": "kill timed out"})
    result = PlanRunner(executor, Clock()).run(7, UPDATE)
    assert "remove:digits.b" in executor.log
    assert result.undo_errors == ("undo stop of digits.b failed: kill timed out",)


def test_report_after_a_rolled_back_update_names_the_reason_and_the_old_version() -> None:
    executor = Executor(failing={"health_check:digits.b": "init() raised ValueError"})
    desired = DesiredState(7, {"digits": module()})
    result = PlanRunner(executor, Clock()).run(7, UPDATE)
    after = CurrentState(NOW, {"digits.a": OLD}, {"digits": "digits.a"})
    report = build_report(
        device_id="dev-1",
        last_applied_sequence=7,
        status=overall_status(None, result),
        current=after,
        desired=desired,
        result=result,
        now=NOW,
    )
    assert report["status"]["code"] == 500
    assert report["lastAppliedSequence"] == 7
    assert report["reportedAt"] == "2025-06-01T12:00:00Z"
    assert report["modules"]["digits"] == {
        "version": 1,
        "desiredVersion": 2,
        "service": "digits.a",
        "status": "running",
        "restartCount": 0,
        "exitCode": None,
        "lastError": "health_check of digits.b failed: init() raised ValueError",
        "port": 5001,
    }


def test_report_of_a_refused_document_keeps_the_last_applied_sequence() -> None:
    from edgeship.agent.decide.accept import ReplayError

    report = build_report(
        device_id="dev-1",
        last_applied_sequence=7,
        status=overall_status(ReplayError("sequence 3 is not above 7"), None),
        current=CurrentState(NOW, {"digits.a": OLD}, {"digits": "digits.a"}),
        message="sequence 3 is not above 7",
        now=NOW,
    )
    assert report["status"]["code"] == 409 and report["status"]["message"] == "sequence 3 is not above 7"
    assert report["modules"]["digits"]["version"] == 1


def test_an_unreachable_download_host_waits_and_cools_off_and_is_reported_in_progress_not_failed() -> None:
    clock = Clock()
    executor = Executor(unreachable={"download:digits.b:bundle"})
    runner = PlanRunner(executor, clock, CoolOff(base=5, cap=60))
    result = runner.run(7, UPDATE)
    outcome = result.outcomes["digits"]
    assert not result.ok and result.waiting and outcome.waiting and not outcome.cooling_off
    assert outcome.error == "download of digits.b waits: http://hub/blobs/x: connection refused"
    assert overall_status(None, result) == 202
    after = CurrentState(NOW, {"digits.a": OLD}, {"digits": "digits.a"})
    report = build_report(
        device_id="dev-1",
        last_applied_sequence=7,
        status=202,
        current=after,
        desired=DesiredState(7, {"digits": module()}),
        result=result,
        now=NOW,
    )
    assert report["status"]["description"].startswith("in progress")
    assert (report["modules"]["digits"]["version"], report["modules"]["digits"]["status"]) == (1, "running")
    clock.now += 1
    held = runner.run(7, UPDATE)  # still cooling off: waiting, not "backoff", and the download is not tried
    assert held.waiting and held.outcomes["digits"].cooling_off and executor.log.count("download:digits.b:bundle") == 1
    assert overall_status(None, held) == 202
    clock.now += 4
    executor.unreachable.clear()
    assert runner.run(7, UPDATE).ok  # the hub is back: the retry applies the release


def test_a_real_failure_beside_a_waiting_module_makes_the_run_failed() -> None:
    commands = plan(DesiredState(7, {"a": module("a"), "b": module("b")}), CurrentState(NOW))
    executor = Executor(unreachable={"download:a.a:bundle"}, failing={"health_check:b.a": "init() raised"})
    result = PlanRunner(executor, Clock()).run(7, commands)
    assert result.outcomes["a"].waiting and not result.outcomes["b"].waiting
    assert not result.waiting and overall_status(None, result) == 500
    first_install = build_report(
        device_id="dev-1",
        last_applied_sequence=7,
        status=500,
        current=CurrentState(NOW),
        desired=DesiredState(7, {"a": module("a"), "b": module("b")}),
        result=result,
        now=NOW,
    )
    assert first_install["modules"]["a"]["status"] == "stopped"  # waiting for its first download: not "failed"
    assert first_install["modules"]["b"]["status"] == "failed"
