"""The rollout engine over a real SQLite store and the hub's services: waves, abort and rollback, operators.

Devices are simulated by reports built from the documents the services published to an
in-memory device link (a fake of the hub's own ``DeviceLink``); the clock is a list the
test moves. Real agents are in ``tests/e2e/test_rollouts.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hub_world import HubWorld

from edgeship.deployment import DeploymentDocument
from edgeship.errors import InputError
from edgeship.hub.errors import HubNotFoundError, RolloutStateError
from edgeship.hub.rollouts import RolloutPolicy
from edgeship.hub.services import HubServices, ModuleRefSpec, Outgoing
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, verify_envelope

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
DEVICES = [f"dev-{i}" for i in range(6)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(world: HubWorld, clock: Clock, tmp_path: Path) -> HubServices:
    services = world.services(f"sqlite:///{tmp_path / 'hub.db'}", clock=clock)
    for version in (1, 2):
        services.catalog.upload_module(world.module("digits", version, image=False))
    for i, device in enumerate(DEVICES):
        services.fleet.create_device(device, {"site": "lab" if i % 2 else "field"})
    return services


def running(hub: HubServices, device: str) -> dict[str, int]:
    """What the device's newest document asks it to run: module -> version."""
    desired = hub.fleet.get_device(device).desired
    if desired is None:
        return {}
    modules = json.loads(desired.fingerprint)["modules"]
    return {name: int(part["ref"].split(":")[1]) for name, part in modules.items()}


def report(hub: HubServices, device: str, *, code: int = 200, modules: dict[str, int] | None = None) -> None:
    """The device applied its newest document (or failed with ``code`` and kept ``modules``)."""
    desired = hub.fleet.get_device(device).desired
    assert desired is not None
    runs = running(hub, device) if modules is None else modules
    hub.fleet.record_reported(device, {
        "schemaVersion": 1, "deviceId": device, "lastAppliedSequence": desired.sequence,
        "status": {"code": code},
        "modules": {n: {"version": v, "status": "running"} for n, v in runs.items()},
    })


def apply_all(hub: HubServices, fail: Callable[[str], bool] = lambda _d: False) -> None:
    """Every device answers its newest document: the release fails where ``fail`` says (it keeps v1)."""
    for device in DEVICES:
        if fail(device) and running(hub, device).get("digits") == 2:
            report(hub, device, code=500, modules={"digits": 1})
        else:
            report(hub, device)


def staged(**options: object) -> RolloutPolicy:
    return RolloutPolicy.from_dict({"waves": "1,3,6", **options})


def test_waves_go_out_one_after_another_and_complete(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v1", "*", [ModuleRefSpec("digits", 1)])
    apply_all(hub)
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], priority=10, rollout=staged(),
                                      actor="ci")
    members = hub.rollouts.members("v2")
    assert sorted(members.values()) == [1, 2, 2, 3, 3, 3]
    view = hub.rollouts.show("v2")
    assert (view.state, view.wave, [w.targeted for w in view.waves]) == ("rolling-out", 1, [1, 2, 3])
    assert {d: running(hub, d)["digits"] for d in DEVICES} == {d: 2 if members[d] == 1 else 1 for d in DEVICES}
    status = {s.device_id: (s.state, s.reason) for s in hub.deployments.deployment_status("v2").devices}
    assert {d: s for d, (s, _r) in status.items()} == {d: "pending" if members[d] == 1 else "held" for d in DEVICES}
    assert {r for d, (_s, r) in status.items() if members[d] == 3} == {"waiting for wave 3"}
    for wave in (1, 2, 3):
        apply_all(hub)
        clock.advance(1)
        hub.rollouts.tick()
        view = hub.rollouts.show("v2")
        expected_wave = min(wave + 1, 3)
        assert view.wave == expected_wave
        assert {d for d in DEVICES if running(hub, d)["digits"] == 2} == {
            d for d in DEVICES if members[d] <= (expected_wave if wave < 3 else 3)
        }
    assert view.state == "completed"
    assert [w.succeeded for w in view.waves] == [1, 2, 3]
    assert [w.status for w in view.waves] == ["done", "done", "done"]
    actions = [(e.actor, e.action) for e in hub.rollouts.events("v2")]
    assert actions == [("ci", "started"), ("hub", "wave-started"), ("hub", "wave-started"), ("hub", "completed")]


def test_a_failing_release_aborts_in_wave_one_and_never_reaches_the_others(
    hub: HubServices, world: HubWorld, clock: Clock,
) -> None:
    hub.deployments.create_deployment("v1", "*", [ModuleRefSpec("digits", 1)])
    apply_all(hub)
    world.published.clear()
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], priority=10, rollout=staged())
    first = next(d for d, w in hub.rollouts.members("v2").items() if w == 1)
    apply_all(hub, fail=lambda d: True)
    clock.advance(1)
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert view.state == "aborted" and view.tripped == (first,)
    assert "1 of 1 executed devices failed" in view.reason
    assert [w.failed for w in view.waves] == [1, 0, 0]
    assert all(running(hub, d) == {"digits": 1} for d in DEVICES)
    exposed = {o.device_id for o in world.published if "v2" in _deployments(world, o)}
    assert exposed == {first}
    with pytest.raises(RolloutStateError, match="aborted already"):
        hub.rollouts.abort("v2", actor="op")


def _deployments(world: HubWorld, doc: Outgoing) -> list[str]:
    """The deployments a published document names (verified as an agent would)."""
    payload = verify_envelope(doc.envelope, world.trust_root(), "hub", DEPLOYMENT_PAYLOAD_TYPE, now=T0)
    return list(DeploymentDocument.from_bytes(payload).deployments)


def test_an_abort_pins_the_last_known_good_module_layering_no_longer_gives(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v1", "*", [ModuleRefSpec("digits", 1)])
    apply_all(hub)
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], priority=10, rollout=staged())
    first = next(d for d, w in hub.rollouts.members("v2").items() if w == 1)
    apply_all(hub)
    hub.deployments.delete_deployment("v1")  # the operator cleaned up too early
    assert running(hub, first) == {"digits": 2}
    others = [d for d in DEVICES if d != first]
    assert all(running(hub, d) == {} for d in others)
    view = hub.rollouts.abort("v2", actor="alice", reason="latency regression")
    assert view.state == "aborted" and view.reason == "latency regression"
    assert view.rolled_back == {first: ("digits:1",)}
    assert running(hub, first) == {"digits": 1}
    hub.issuing.refresh()
    assert running(hub, first) == {"digits": 1}, "a pin survives re-evaluation"
    assert hub.rollouts.events("v2")[-1].actor == "alice"


def test_approval_between_waves(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], rollout=staged(approveEachWave=True))
    apply_all(hub)
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert (view.state, view.wave) == ("waiting-approval", 1)
    assert "approve" in view.reason
    hub.rollouts.tick()
    assert hub.rollouts.show("v2").wave == 1, "waiting for approval does not advance on its own"
    view = hub.rollouts.approve("v2", actor="bob")
    assert (view.state, view.wave) == ("rolling-out", 2)
    assert sum(1 for d in DEVICES if running(hub, d).get("digits") == 2) == 3
    with pytest.raises(RolloutStateError, match="waits for no approval"):
        hub.rollouts.approve("v2", actor="bob")


def test_pause_holds_and_resume_goes_on(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], rollout=staged())
    hub.rollouts.pause("v2", actor="op")
    apply_all(hub)
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert (view.state, view.wave) == ("paused", 1) and "resume" in view.waiting_for
    with pytest.raises(RolloutStateError):
        hub.rollouts.pause("v2", actor="op")
    view = hub.rollouts.resume("v2", actor="op")
    assert (view.state, view.wave) == ("rolling-out", 2)


def test_a_restarted_hub_resumes_in_the_same_phase(
    hub: HubServices, world: HubWorld, clock: Clock, tmp_path: Path,
) -> None:
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], rollout=staged())
    apply_all(hub)
    hub.rollouts.tick()
    assert hub.rollouts.show("v2").wave == 2
    again = world.services(f"sqlite:///{tmp_path / 'hub.db'}", clock=clock)
    assert again.rollouts.show("v2").wave == 2
    apply_all(again)
    again.rollouts.tick()
    assert again.rollouts.show("v2").wave == 3


def test_a_pass_woken_by_reports_reads_the_waves_out_and_still_aborts(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v1", "*", [ModuleRefSpec("digits", 1)])
    apply_all(hub)
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], priority=10, rollout=staged())
    first = next(d for d, w in hub.rollouts.members("v2").items() if w == 1)
    report(hub, first)
    assert hub.rollouts.tick(full=False) == 1, "wave 1 succeeded: the partial pass reads everything, then advances"
    assert hub.rollouts.show("v2").wave == 2
    second = [d for d, w in hub.rollouts.members("v2").items() if w == 2]
    report(hub, second[0], code=500, modules={"digits": 1})
    assert hub.rollouts.tick(full=False) == 1
    view = hub.rollouts.show("v2")
    assert view.state == "aborted" and [w.targeted for w in view.waves] == [1, 2, 3]
    assert hub.rollouts.tick(full=False) == 0, "no active rollout: nothing to read"


def test_a_device_that_joins_mid_rollout_gets_what_its_wave_gets(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v2", "tags.site = 'lab'", [ModuleRefSpec("digits", 2)],
                                      rollout=RolloutPolicy.from_dict({"waves": "1,100%"}))
    assert sorted(hub.rollouts.members("v2").values()) == [1, 2, 2]
    newcomers = [d for d in DEVICES if hub.fleet.get_device(d).device.tags["site"] == "field"]
    for device in newcomers:
        hub.fleet.update_tags(device, {"site": "lab"})
    hub.rollouts.tick()
    members = hub.rollouts.members("v2")
    assert set(newcomers) <= set(members)
    for device in DEVICES:
        assert (running(hub, device).get("digits") == 2) == (members[device] == 1)


def test_an_offline_device_times_out_without_aborting_by_default(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)],
                                      rollout=staged(waves="100%", advancePercent=80, waveTimeout="1m"))
    offline = DEVICES[0]
    for device in DEVICES[1:]:
        report(hub, device)
    hub.rollouts.tick()
    assert hub.rollouts.show("v2").state == "completed"  # 5 of 6 is above 80%
    hub.deployments.delete_deployment("v2")
    hub.deployments.create_deployment("v3", "*", [ModuleRefSpec("digits", 1)],
                                      rollout=staged(waves="100%", waveTimeout="1m"))
    for device in DEVICES[1:]:
        report(hub, device)
    clock.advance(61)
    hub.rollouts.tick()
    view = hub.rollouts.show("v3")
    assert view.state == "waiting-approval" and "1 timed-out" in view.reason
    assert view.waves[0].timed_out == 1 and offline


def test_errors_name_what_is_wrong(hub: HubServices) -> None:
    hub.deployments.create_deployment("plain", "*", [ModuleRefSpec("digits", 1)])
    with pytest.raises(HubNotFoundError, match="every targeted device at once"):
        hub.rollouts.show("plain")
    with pytest.raises(HubNotFoundError):
        hub.rollouts.pause("missing", actor="op")
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], rollout=staged())
    with pytest.raises(InputError, match="at most 1024"):
        hub.rollouts.pause("v2", actor="op", reason="x" * 2000)
    with pytest.raises(RolloutStateError, match="cannot be resumed"):
        hub.rollouts.resume("v2", actor="op")


def test_a_refusal_aborts_though_the_agent_keeps_its_older_sequence(hub: HubServices, clock: Clock) -> None:
    hub.deployments.create_deployment("v1", "*", [ModuleRefSpec("digits", 1)])
    apply_all(hub)
    before = {d: hub.fleet.get_device(d).desired.sequence for d in DEVICES}  # type: ignore[union-attr]
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], priority=10, rollout=staged())
    first = next(d for d, w in hub.rollouts.members("v2").items() if w == 1)
    clock.advance(1)
    hub.fleet.record_reported(first, {
        "schemaVersion": 1, "deviceId": first, "lastAppliedSequence": before[first], "status": {"code": 401},
        "modules": {"digits": {"version": 1, "status": "running"}},
    })
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert (view.state, view.tripped, view.waves[0].refused) == ("aborted", (first,), 1)


def telemetry(hub: HubServices, clock: Clock, device: str, version: int, *, requests: int = 100,
              server_errors: int = 0, p99: float = 10.0, minutes: int = 1) -> None:
    """``minutes`` one-minute samples from the device, ending now (the clock)."""
    samples = []
    for i in range(minutes):
        when = clock.now - timedelta(minutes=minutes - 1 - i)
        samples.append({
            "time": when.isoformat().replace("+00:00", "Z"), "seq": int(when.timestamp()), "cpuPercent": 1.0,
            "memoryBytes": 1, "modules": {"digits": {
                "version": version, "requests": requests, "errors": server_errors, "serverErrors": server_errors,
                "clientErrors": 0, "latencyMs": {"p50": p99 / 3, "p95": p99 / 2, "p99": p99}}},
        })
    hub.fleet.record_telemetry(device, {"schemaVersion": 2, "deviceId": device, "samples": samples})


def gated(hub: HubServices, clock: Clock, *gates: str) -> str:
    """v1 everywhere with 30 minutes of healthy traffic, then v2 staged behind ``gates``; the wave-1 device."""
    hub.deployments.create_deployment("v1", "*", [ModuleRefSpec("digits", 1)])
    apply_all(hub)
    for device in DEVICES:
        telemetry(hub, clock, device, 1, p99=10.0, minutes=30)
    clock.advance(60)
    hub.deployments.create_deployment("v2", "*", [ModuleRefSpec("digits", 2)], priority=10,
                                      rollout=staged(soak="5m", gates=list(gates)))
    first = next(d for d, w in hub.rollouts.members("v2").items() if w == 1)
    report(hub, first)
    hub.rollouts.tick()  # the engine sees it running: the soak starts
    return first


def test_the_error_rate_gate_aborts_a_release_that_answers_500_during_its_soak(
    hub: HubServices, clock: Clock,
) -> None:
    first = gated(hub, clock, "error_rate <= 1%")
    clock.advance(60)
    telemetry(hub, clock, first, 2, requests=50, server_errors=50)
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert (view.state, view.tripped, view.waves[0].unhealthy) == ("aborted", (first,), 1)
    assert running(hub, first) == {"digits": 1}
    detail = hub.rollouts.events("v2")[-1].detail
    assert detail["unhealthy"] == {first: "digits: error_rate 100% (50 of 50) breaches 'error_rate <= 1%'"}


def test_the_p99_gate_stops_a_slow_release_and_passes_a_fast_one(hub: HubServices, clock: Clock) -> None:
    first = gated(hub, clock, "p99_ratio <= 1.5")
    clock.advance(120)
    telemetry(hub, clock, first, 2, p99=12.0, minutes=2)
    hub.rollouts.tick()
    assert hub.rollouts.show("v2").waves[0].soaking == 1, "as fast as v1: keeps soaking"
    clock.advance(240)
    telemetry(hub, clock, first, 2, p99=11.0, minutes=4)
    hub.rollouts.tick()
    assert hub.rollouts.show("v2").wave == 2, "soaked and healthy: the next wave goes out"
    second = [d for d, w in hub.rollouts.members("v2").items() if w == 2]
    report(hub, second[0])
    hub.rollouts.tick()
    clock.advance(60)
    telemetry(hub, clock, second[0], 2, p99=100.0)
    hub.rollouts.tick()
    assert hub.rollouts.show("v2").state == "rolling-out", "p99 judges once the device soaked, not on a busy start"
    clock.advance(300)
    telemetry(hub, clock, second[0], 2, p99=100.0)
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert view.state == "aborted" and view.tripped == (second[0],)
    assert "p99_ratio" in hub.rollouts.events("v2")[-1].detail["unhealthy"][second[0]]


def test_a_device_without_traffic_is_no_data_never_healthy(hub: HubServices, clock: Clock) -> None:
    gated(hub, clock, "error_rate <= 1%")
    clock.advance(360)
    hub.rollouts.tick()
    view = hub.rollouts.show("v2")
    assert (view.state, view.wave, view.waves[0].no_data, view.waves[0].succeeded) == ("rolling-out", 1, 1, 0)


def test_a_deployment_of_several_modules_rolls_them_out_together(
    hub: HubServices, world: HubWorld, clock: Clock,
) -> None:
    hub.catalog.upload_module(world.module("metrics", 1, image=False))
    hub.deployments.create_deployment("pair", "*", [ModuleRefSpec("digits", 2), ModuleRefSpec("metrics", 1)],
                                      rollout=staged())
    members = hub.rollouts.members("pair")
    for device in DEVICES:
        assert running(hub, device) == ({"digits": 2, "metrics": 1} if members[device] == 1 else {})
    first = next(d for d, w in members.items() if w == 1)
    report(hub, first, modules={"digits": 2})  # metrics not running: the release is not applied
    hub.rollouts.tick()
    assert hub.rollouts.show("pair").state == "aborted", "a device running half the release rolled back"
