"""The planner: each scenario's recorded command sequence. No runtime involved."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edgeship.agent.decide.plan import (
    UNPACK_FACTOR,
    CheckSpace,
    Command,
    CurrentState,
    DesiredModule,
    DesiredState,
    Download,
    Install,
    Restart,
    RestartLimits,
    RunningService,
    Switch,
    plan,
    restart_delay,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
LOCK = "sha256:" + "11" * 32
LOCK2 = "sha256:" + "22" * 32


def want(name: str = "digits", version: int = 2, lock: str = LOCK, **kwargs: object) -> DesiredModule:
    return DesiredModule(
        name=name,
        version=version,
        module_digest=f"sha256:{name}-{version}",
        lock_digest=lock,
        bundle_url=f"/blobs/{name}-{version}-bundle",
        bundle_digest=f"sha256:bundle-{name}-{version}",
        **kwargs,  # type: ignore[arg-type]
    )


def running(
    name: str = "digits", version: int = 1, slot: str = "a", lock: str = LOCK, **kwargs: object
) -> RunningService:
    fields: dict[str, object] = {"state": "running", "port": 5001, **kwargs}
    return RunningService(
        service=f"{name}.{slot}",
        module=name,
        version=version,
        module_digest=f"sha256:{name}-{version}",
        lock_digest=lock,
        **fields,  # type: ignore[arg-type]
    )


def desired(*modules: DesiredModule, sequence: int = 7) -> DesiredState:
    return DesiredState(sequence, {m.name: m for m in modules})


def current(
    *services: RunningService, active: dict[str, str] | None = None, envs: tuple[str, ...] = ()
) -> CurrentState:
    by_name = {s.service: s for s in services}
    if active is None:
        active = {s.module: s.service for s in services}
    return CurrentState(NOW, by_name, active, frozenset(envs))


def recorded(commands: list[Command]) -> list[str]:
    return [c.id for c in commands]


def test_new_module_is_downloaded_verified_installed_started_checked_and_switched() -> None:
    commands = plan(desired(want(version=1)), current())
    assert recorded(commands) == [
        "check_space:digits.a",
        "download:digits.a:bundle",
        "verify:digits.a",
        "install:digits.a",
        "start_candidate:digits.a",
        "health_check:digits.a",
        "switch:digits.a",
    ]
    install = commands[3]
    assert isinstance(install, Install) and install.reuse_env is False


def test_image_is_downloaded_too_when_the_module_has_one() -> None:
    module = want(version=1, image_url="/blobs/img", image_digest="sha256:img")
    assert recorded(plan(desired(module), current()))[:3] == [
        "check_space:digits.a", "download:digits.a:bundle", "download:digits.a:image"
    ]


def test_the_space_check_and_the_downloads_carry_the_signed_sizes() -> None:
    module = want(version=1, bundle_size=20_000, image_url="/blobs/img", image_digest="sha256:img", image_size=900)
    check, bundle, image = plan(desired(module), current())[:3]
    assert isinstance(check, CheckSpace) and isinstance(bundle, Download) and isinstance(image, Download)
    assert check.blobs == (("sha256:bundle-digits-1", 20_000), ("sha256:img", 900))
    assert check.unpack == UNPACK_FACTOR * 20_000
    assert (bundle.size, image.size) == (20_000, 900)


def test_same_build_running_needs_nothing() -> None:
    assert plan(desired(want(version=1)), current(running(version=1))) == []


def test_new_version_starts_in_the_other_slot_and_retires_the_old_one_after_the_switch() -> None:
    commands = plan(desired(want(version=2)), current(running(version=1, slot="a"), envs=(LOCK,)))
    assert recorded(commands) == [
        "check_space:digits.b",
        "download:digits.b:bundle",
        "verify:digits.b",
        "install:digits.b",
        "start_candidate:digits.b",
        "health_check:digits.b",
        "switch:digits.b",
        "stop:digits.a",
        "remove:digits.a",
    ]
    switch = commands[6]
    assert isinstance(switch, Switch) and switch.previous == "digits.a"


def test_slots_alternate_back_to_a() -> None:
    commands = plan(desired(want(version=3)), current(running(version=2, slot="b")))
    assert recorded(commands)[0] == "check_space:digits.a"


def test_model_only_update_reuses_the_environment() -> None:
    commands = plan(desired(want(version=2, lock=LOCK)), current(running(version=1, lock=LOCK), envs=(LOCK,)))
    install = next(c for c in commands if isinstance(c, Install))
    assert install.reuse_env is True


def test_new_dependencies_build_a_new_environment() -> None:
    commands = plan(desired(want(version=2, lock=LOCK2)), current(running(version=1, lock=LOCK), envs=(LOCK,)))
    install = next(c for c in commands if isinstance(c, Install))
    assert install.reuse_env is False


def test_removed_module_is_stopped_and_removed() -> None:
    state = current(running("digits", 1), running("other", 4))
    assert recorded(plan(desired(want("digits", 1)), state)) == ["stop:other.a", "remove:other.a"]


def test_empty_document_removes_everything() -> None:
    assert recorded(plan(desired(), current(running("digits", 1)))) == ["stop:digits.a", "remove:digits.a"]


def test_leftover_candidate_from_a_crash_is_cleaned_up_first() -> None:
    old = running(version=1, slot="a")
    half = running(version=2, slot="b", state="stopped")
    commands = plan(desired(want(version=2)), current(old, half, active={"digits": "digits.a"}))
    assert recorded(commands)[:3] == ["stop:digits.b", "remove:digits.b", "check_space:digits.b"]


def test_removals_come_before_installs_and_modules_go_by_name() -> None:
    state = current(running("zeta", 1))
    ids = recorded(plan(desired(want("beta", 1), want("alpha", 1)), state))
    assert ids[:2] == ["stop:zeta.a", "remove:zeta.a"]
    assert ids.index("switch:alpha.a") < ids.index("download:beta.a:bundle")


def test_module_names_are_lowercased_for_services() -> None:
    assert recorded(plan(desired(want("Digits", 1)), current()))[0] == "check_space:digits.a"


# --- crashed modules and the restart policy ------------------------------------------------------


def crashed(exit_code: int = 1, restarts: int = 0, ago: timedelta = timedelta(minutes=10)) -> RunningService:
    return running(version=1, state="failed", exit_code=exit_code, restart_count=restarts, last_exit_time=NOW - ago)


def test_crashed_module_is_restarted_under_on_failure() -> None:
    commands = plan(desired(want(version=1, restart_policy="on-failure")), current(crashed()))
    assert recorded(commands) == ["restart:digits.a"]
    assert isinstance(commands[0], Restart) and commands[0].attempt == 1


def test_clean_exit_is_not_restarted_under_on_failure_but_is_under_always() -> None:
    clean = running(version=1, state="stopped", exit_code=0, last_exit_time=NOW - timedelta(hours=1))
    assert plan(desired(want(version=1, restart_policy="on-failure")), current(clean)) == []
    assert recorded(plan(desired(want(version=1, restart_policy="always")), current(clean))) == ["restart:digits.a"]


def test_never_policy_leaves_a_crashed_module_down() -> None:
    assert plan(desired(want(version=1, restart_policy="never")), current(crashed())) == []


def test_restart_waits_out_an_exponential_cool_off() -> None:
    limits = RestartLimits(base=timedelta(seconds=10), cap=timedelta(minutes=5))
    module = desired(want(version=1, restart_policy="always"))
    # after 3 restarts the delay is 80 s
    assert plan(module, current(crashed(restarts=3, ago=timedelta(seconds=79))), limits) == []
    due = current(crashed(restarts=3, ago=timedelta(seconds=80)))
    assert recorded(plan(module, due, limits)) == ["restart:digits.a"]


def test_restart_delay_doubles_and_is_capped() -> None:
    limits = RestartLimits(base=timedelta(seconds=10), cap=timedelta(minutes=5))
    assert [restart_delay(n, limits).total_seconds() for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert restart_delay(10_000, limits) == limits.cap


def test_a_module_in_backoff_is_left_to_the_runtime() -> None:
    assert plan(desired(want(version=1, restart_policy="always")), current(running(version=1, state="backoff"))) == []


def test_crashed_old_version_is_replaced_not_restarted() -> None:
    ids = recorded(plan(desired(want(version=2)), current(crashed())))
    assert "restart:digits.a" not in ids and ids[-2:] == ["stop:digits.a", "remove:digits.a"]


def test_plan_is_pure_the_same_input_gives_the_same_commands() -> None:
    state = current(running("a", 1), running("b", 1))
    wanted = desired(want("a", 2), want("c", 1))
    assert plan(wanted, state) == plan(wanted, state)


def test_an_active_slot_left_stopped_inside_a_fixed_port_switch_is_restarted_before_the_update_is_retried() -> None:
    """A kill after the old slot was stopped to free its port (``yielded``): the old version serves again first."""
    old = running(version=1, slot="a", state="stopped", exit_code=0)
    half_moved = running(version=2, slot="b")
    state = CurrentState(NOW, {"digits.a": old, "digits.b": half_moved}, {"digits": "digits.a"},
                         frozenset([LOCK]), yielded=frozenset(["digits.a"]))
    commands = recorded(plan(desired(want(version=2, restart_policy="on-failure")), state))
    assert commands[:3] == ["stop:digits.b", "remove:digits.b", "restart:digits.a"]
    assert commands[3:] == [
        "check_space:digits.b", "download:digits.b:bundle", "verify:digits.b", "install:digits.b",
        "start_candidate:digits.b", "health_check:digits.b", "switch:digits.b", "stop:digits.a", "remove:digits.a",
    ]
    # The same slot stopped cleanly on its own (not yielded) stays stopped under on-failure: only the update.
    plain = CurrentState(NOW, {"digits.a": old}, {"digits": "digits.a"}, frozenset([LOCK]))
    assert "restart:digits.a" not in recorded(plan(desired(want(version=2)), plain))
