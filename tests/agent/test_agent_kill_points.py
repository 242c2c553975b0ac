"""A SIGKILL at every step of an install and of an update (issue 13): the device serves the old or the new version.

For each fault point of ``edgeship.agent.faults`` a real ``edgeship agent run`` (process
runtime, a real Mosquitto, a real blob host) is started with
``EDGESHIP_AGENT_FAULT=<step>:mnist``, is sent a document, and kills itself there with
SIGKILL. While it is dead, the slot ``state/agent.json`` names active answers an inference
(in an update: the old version, or the new one once the switch was recorded). It is then
started again without the fault and must report 200 for the new version, serve it, and
leave nothing behind (``kill_checks.leftovers``: no scratch, no ``.part``, no slot, module
folder, process or listening port but the active slot's).

Install cases use one fresh device each (a first install has nothing to chain); update cases
share one device whose module goes up a version per case, each a new build so that its
download and unpack really happen. The update is model-only (same environment lock), so it
has no ``environment`` step; the install's ``environment`` case is the one that builds the
file's venv (killed in the middle of ``pip install``, then built again), which every later
case reuses.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer, SignedModule, infer
from kill_checks import leftovers, serving_slot, settled
from module_world import session_wheelhouse
from mosquitto import Mosquitto
from parts import free_port

from edgeship.deployment import ModuleSettings

pytestmark = [pytest.mark.timeout(900), pytest.mark.mosquitto, pytest.mark.slow]

INSTALL_STEPS = ["environment", "download", "verify", "unpack", "install", "start", "health", "switch"]
UPDATE_STEPS = ["download", "verify", "unpack", "install", "start", "health", "switch", "stop", "remove"]
AFTER_SWITCH = {"switch", "stop", "remove"}  # the new slot is the recorded active one from here on


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentWorld]:
    root = tmp_path_factory.mktemp("agent-kill")
    blobs = BlobServer(root / "served")
    yield AgentWorld(root, session_wheelhouse(tmp_path_factory), blobs)
    blobs.close()


@pytest.fixture(scope="module")
def broker(world: AgentWorld) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(world.root / "mosquitto").start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="module")
def observer(broker: Mosquitto) -> Iterator[Observer]:
    obs = Observer(broker.port, client_id="kill-points-observer")
    yield obs
    obs.close()


@pytest.fixture(scope="module")
def first(world: AgentWorld) -> SignedModule:
    return world.module("mnist")


def _venvs(world: AgentWorld) -> Path:
    return world.root / "venvs"


def _applied(version: int, sequence: int) -> Callable[[dict[str, Any]], bool]:
    def check(report: dict[str, Any]) -> bool:
        module = report["modules"].get("mnist") or {}
        return (
            report["lastAppliedSequence"] == sequence
            and report["status"]["code"] == 200
            and module.get("version") == version
            and module.get("status") == "running"
        )

    return check


def _answers(port: int) -> bool:
    try:
        return infer(port, timeout=10) == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _come_back(agent: AgentProcess, observer: Observer, world: AgentWorld, version: int, sequence: int,
               timeout: float) -> None:
    """Restart ``agent`` without a fault; it must report ``version`` applied, serve it, and leave nothing."""
    mark = len(observer.messages)
    agent.start()
    report = observer.report(agent.device_id, _applied(version, sequence), after=mark, timeout=timeout)
    port = report["modules"]["mnist"]["port"]
    assert _answers(port), agent.log()[-3000:]
    state = settled(agent)
    assert state["active"] == {"mnist": report["modules"]["mnist"]["service"]}
    assert leftovers(agent, venvs=_venvs(world)) == [], agent.log()[-3000:]
    assert agent.stop() == 0


@pytest.mark.parametrize("step", INSTALL_STEPS)
def test_a_kill_at_each_step_of_a_first_install_converges_to_the_new_version_after_a_restart(
    step: str, world: AgentWorld, broker: Mosquitto, observer: Observer, first: SignedModule
) -> None:
    dev = f"dev-install-{step}"
    agent = AgentProcess(world, dev, broker.url, world.root / "devices" / dev)
    if step != "environment" or not _venvs(world).is_dir():
        agent.share_venvs(_venvs(world))  # else: a venv of its own, so that one is built (and killed)
    try:
        agent.start(fault=f"{step}:mnist")
        observer.desired(dev, world.document(dev, 1, [first]))
        agent.wait_killed(timeout=300)
        assert f"fault injected: {step} of mnist" in agent.log()
        slot = serving_slot(agent)
        if step == "switch":  # recorded active just before the kill: it serves while the agent is dead
            assert slot is not None and _answers(slot[1])
        else:
            assert slot is None
        requests = len(world.blobs.requests)
        _come_back(agent, observer, world, first.version, 1, timeout=600)
        if step == "download":  # the restarted agent resumed the partial it had
            resumed = [r for p, r in world.blobs.requests[requests:] if p.endswith(first.bundle_digest)]
            assert resumed and all(r and not r.startswith("bytes=0-") for r in resumed), resumed
    finally:
        agent.cleanup()


@dataclass
class _Device:
    agent: AgentProcess
    sequence: int  # of the last document published to it


@pytest.fixture(scope="module")
def updating(world: AgentWorld, broker: Mosquitto, observer: Observer) -> Iterator[_Device]:
    """One device running mnist, updated to the next version by every update case."""
    dev = "dev-update"
    agent = AgentProcess(world, dev, broker.url, world.root / "devices" / dev)
    agent.share_venvs(_venvs(world))
    module = world.module("mnist")
    agent.start()
    try:
        observer.desired(dev, world.document(dev, 1, [module]))
        observer.report(dev, _applied(module.version, 1), timeout=600)
        settled(agent)
        agent.stop()
        yield _Device(agent, 1)
    finally:
        agent.cleanup()


@pytest.mark.parametrize("step", UPDATE_STEPS)
def test_a_kill_at_each_step_of_an_update_leaves_the_old_or_the_new_version_serving(
    step: str, world: AgentWorld, observer: Observer, updating: _Device
) -> None:
    agent, dev = updating.agent, updating.agent.device_id
    agent.stop()  # still running if the case before failed
    old = serving_slot(agent)
    assert old is not None and _answers(old[1])
    new = world.module("mnist")  # a new build: its bundle is downloaded and unpacked
    updating.sequence += 1
    sequence = updating.sequence
    agent.start(fault=f"{step}:mnist")
    observer.desired(dev, world.document(dev, sequence, [new]))
    agent.wait_killed(timeout=300)
    assert f"fault injected: {step} of mnist" in agent.log()

    slot = serving_slot(agent)
    assert slot is not None and _answers(slot[1]), f"nothing serves while the agent is dead (slot {slot})"
    assert (slot != old) == (step in AFTER_SWITCH)  # the old version until the switch, the new one after

    _come_back(agent, observer, world, new.version, sequence, timeout=300)


def test_a_kill_inside_a_fixed_port_switch_serves_the_old_version_again_before_the_update_is_retried(
    world: AgentWorld, broker: Mosquitto, observer: Observer, first: SignedModule
) -> None:
    """The one step where nothing serves while the agent is down (docs/agent.md): the old slot was
    stopped to free the fixed port and the candidate is not on it yet. The restarted agent starts
    the old slot again first, then retries the update, which ends on the fixed port."""
    dev = "dev-fixed-port"
    fixed = free_port()
    settings = {"mnist": ModuleSettings(port=fixed)}
    agent = AgentProcess(world, dev, broker.url, world.root / "devices" / dev)
    agent.share_venvs(_venvs(world))
    try:
        agent.start()
        observer.desired(dev, world.document(dev, 1, [first], settings=settings))
        observer.report(dev, _applied(first.version, 1), timeout=300)
        assert _answers(fixed)
        agent.stop()
        new = world.module("mnist")
        agent.start(fault="move:mnist")
        observer.desired(dev, world.document(dev, 2, [new], settings=settings))
        agent.wait_killed(timeout=300)
        assert serving_slot(agent) == ("mnist.a", fixed)  # still the old slot, stopped on purpose

        before = len(agent.log())
        _come_back(agent, observer, world, new.version, 2, timeout=300)
        log = agent.log()[before:]
        assert 0 <= log.find("restart mnist.a took") < log.find("install mnist.b"), log[-3000:]
        assert serving_slot(agent) == ("mnist.b", fixed)
    finally:
        agent.cleanup()
