"""The agent end to end: a real Mosquitto, a real HTTP blob server, real process-runtime modules.

The test plays the hub: it signs deployment documents with the hub key, publishes
them retained on the device's ``desired`` topic, and reads ``reported``,
``telemetry`` and ``responses`` as the hub would. The agent runs as
``edgeship agent run`` in a subprocess. One offline venv is built per session and
shared by every agent here (the venv folder is a symlink), so only the first
install pays for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer, SignedModule, infer
from module_world import session_wheelhouse
from parts import free_port

from edgeship.deployment import ModuleSettings
from edgeship.hub.telemetry import parse_telemetry
from edgeship.signing import Signer

pytestmark = [pytest.mark.timeout(900), pytest.mark.mosquitto, pytest.mark.slow]

TESTS = Path(__file__).resolve().parents[1]
INIT_FAILS = TESTS / "scoring" / "scripts" / "init_fails.py"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentWorld]:
    root = tmp_path_factory.mktemp("agent-loop")
    blobs = BlobServer(root / "served")
    yield AgentWorld(root, session_wheelhouse(tmp_path_factory), blobs)
    blobs.close()


@pytest.fixture(scope="module")
def v1(world: AgentWorld) -> SignedModule:
    return world.module("mnist")


@pytest.fixture(scope="module")
def v2(world: AgentWorld, v1: SignedModule) -> SignedModule:
    return world.module("mnist")  # same environment lock, another build: a model-only update


@pytest.fixture
def observer(mosquitto: Any) -> Iterator[Observer]:
    obs = Observer(mosquitto.port)
    yield obs
    obs.close()


@pytest.fixture
def agents(world: AgentWorld, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(device_id: str, broker_url: str, **settings: Any) -> AgentProcess:
        agent = AgentProcess(world, device_id, broker_url, tmp_path / device_id, **settings)
        agent.share_venvs(world.root / "venvs")
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.cleanup()


def _running(version: int, sequence: int, code: int = 200) -> Callable[[dict[str, Any]], bool]:
    def check(report: dict[str, Any]) -> bool:
        module = report["modules"].get("mnist") or {}
        return (
            report["lastAppliedSequence"] == sequence
            and report["status"]["code"] == code
            and module.get("version") == version
            and module.get("status") == "running"
        )

    return check


def _refuses(port: int) -> bool:
    try:
        infer(port, timeout=2)
    except (urllib.error.URLError, ConnectionError, OSError):
        return True
    return False


def _refuses_within(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _refuses(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_documents_apply_update_roll_back_and_every_refusal_is_reported(
    world: AgentWorld, v1: SignedModule, v2: SignedModule, mosquitto: Any, observer: Observer,
    agents: Callable[..., AgentProcess],
) -> None:
    dev = "dev-apply"
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [v1]))
    first = observer.report(dev, _running(1, 1), timeout=240)
    module = first["modules"]["mnist"]
    assert module["service"] == "mnist.a" and module["desiredVersion"] == 1
    assert first["status"]["description"].startswith("ok")
    port1 = module["port"]
    assert infer(port1) == 200

    # Model-only update: same environment, blue/green to the other slot and port.
    observer.desired(dev, world.document(dev, 2, [v2]))
    second = observer.report(dev, _running(2, 2), timeout=120)
    port2 = second["modules"]["mnist"]["port"]
    assert second["modules"]["mnist"]["service"] == "mnist.b" and port2 != port1
    assert infer(port2) == 200
    assert "install mnist.b (reusing its environment)" in agent.log()
    # The old slot is stopped and removed after the switch, once the new version is reported.
    assert _refuses_within(port1, timeout=30)

    # A module whose init() raises: rolled back, the old one keeps serving, 500 with the reason.
    broken = world.module("mnist", entry_script=INIT_FAILS)
    observer.desired(dev, world.document(dev, 3, [broken]))
    failed = observer.report(dev, _running(2, 3, code=500), timeout=120)
    error = failed["modules"]["mnist"]["lastError"]
    assert "health_check of mnist.a failed" in error and "model weights not found" in error
    assert failed["modules"]["mnist"]["desiredVersion"] == broken.version
    assert infer(port2) == 200

    # Refusals: each reported with its code; the last applied document keeps running.
    observer.desired(dev, world.document(dev, 2, [v2]))
    replay = observer.report(dev, lambda r: r["status"]["code"] == 409)
    assert replay["lastAppliedSequence"] == 3 and "not above the last applied 3" in replay["status"]["message"]
    past = datetime.now(timezone.utc) - timedelta(days=2)
    observer.desired(dev, world.document(dev, 4, [v2], issued_at=past, ttl=timedelta(days=1)))
    assert observer.report(dev, lambda r: r["status"]["code"] == 410)["lastAppliedSequence"] == 3
    observer.desired(dev, world.document(dev, 5, [v2], signer=Signer.generate(name="stranger")))
    unknown = observer.report(dev, lambda r: r["status"]["code"] == 401)
    assert unknown["lastAppliedSequence"] == 3
    assert unknown["modules"]["mnist"]["version"] == 2 and unknown["modules"]["mnist"]["status"] == "running"
    assert infer(port2) == 200

    # The trust split: a hub key alone cannot choose the code. Environment variables in a
    # hub-signed document (LD_PRELOAD for a new module) are refused with 400 and nothing starts;
    # a sequence that would lock the device out (2**62, or a jump past the bound) is refused too.
    evil_env = world.module("evil-env")

    def preload(body: dict[str, Any]) -> None:
        body["modules"]["evil-env"]["settings"]["env"] = {"LD_PRELOAD": str(agent.data_dir / "evil.so")}

    observer.desired(dev, world.forged(world.document(dev, 5, [v2, evil_env]), preload))
    env_refused = observer.report(dev, lambda r: r["status"]["code"] == 400)
    assert "settings.env" in env_refused["status"]["message"] and env_refused["lastAppliedSequence"] == 3
    assert "evil-env" not in env_refused["modules"]
    assert not (agent.data_dir / "runtime" / "run" / "evil-env.a").exists()

    def lock_out(body: dict[str, Any]) -> None:
        body["sequence"] = 2**62

    observer.desired(dev, world.forged(world.document(dev, 5, [v2]), lock_out))
    assert observer.report(dev, lambda r: r["status"]["code"] == 400 and "sequence" in r["status"]["message"])
    observer.desired(dev, world.document(dev, 3 + 2**20 + 1, [v2]))
    jump = observer.report(dev, lambda r: r["status"]["code"] == 409 and "more than" in r["status"]["message"])
    assert jump["lastAppliedSequence"] == 3 and infer(port2) == 200

    # A tampered bundle (the mirror serves other bytes under the signed digest): refused, reported.
    evil = world.module("evil")
    world.blobs.put_as(evil.bundle_digest, b"not the signed bundle")
    observer.desired(dev, world.document(dev, 6, [v2, evil]))
    tampered = observer.report(
        dev, lambda r: r["lastAppliedSequence"] == 6 and "evil" in r["modules"] and r["status"]["code"] == 500
    )
    assert "altered or corrupted" in tampered["modules"]["evil"]["lastError"]
    assert tampered["modules"]["mnist"]["version"] == 2 and tampered["modules"]["mnist"]["status"] == "running"
    assert infer(port2) == 200
    assert agent.stop() == 0


def _pid(agent: AgentProcess, service: str) -> int:
    return int(json.loads((agent.data_dir / "runtime" / "run" / service / "run.json").read_text())["pid"])


def test_a_killed_agent_comes_back_without_reinstalling_and_answers_direct_methods(
    world: AgentWorld, v1: SignedModule, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-restart"
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [v1]))
    port = observer.report(dev, _running(1, 1), timeout=240)["modules"]["mnist"]["port"]
    pid = _pid(agent, "mnist.a")

    agent.kill()  # SIGKILL: no clean-up at all
    assert infer(port) == 200  # modules are not the agent's children: they keep serving
    mark = len(observer.messages)
    before = agent.log()
    agent.start()
    again = observer.report(dev, _running(1, 1), after=mark, timeout=60)
    assert again["modules"]["mnist"]["port"] == port
    assert _pid(agent, "mnist.a") == pid
    assert "install" not in agent.log()[len(before):]

    logs = observer.call(dev, "logs", {"module": "mnist", "tail": 5}, "r-logs")
    assert logs["status"] == 200 and isinstance(logs["result"]["logs"], str)
    assert observer.call(dev, "logs", {"module": "mnist", "tail": "all"}, "r-bad")["status"] == 400
    assert observer.call(dev, "logs", b"not json", "r-notjson")["status"] == 400
    assert observer.call(dev, "logs", {"module": "nope"}, "r-nomod")["status"] == 404
    assert observer.call(dev, "reboot", {}, "r-unknown")["status"] == 404
    restarted = observer.call(dev, "restart", {"module": "mnist"}, "r-restart", timeout=60)
    assert restarted["status"] == 200 and restarted["result"]["service"] == "mnist.a"
    assert _pid(agent, "mnist.a") != pid
    deadline = time.monotonic() + 60
    while _refuses(port) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert infer(port) == 200

    assert agent.stop() == 0  # SIGTERM: a clean stop that leaves the modules serving
    assert infer(port) == 200
    status = subprocess.run(
        [sys.executable, "-m", "edgeship", "agent", "status", "--config", str(agent.config), "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    local = json.loads(status.stdout)
    assert local["lastAppliedSequence"] == 1
    assert [(m["module"], m["service"], m["status"], m["port"]) for m in local["modules"]] == [
        ("mnist", "mnist.a", "running", port)
    ]
    online = observer.payloads(f"{dev}/online")
    assert online[-1] == b"0"


def test_after_a_reboot_the_cached_module_starts_at_once_without_a_restart_cool_off(
    world: AgentWorld, v1: SignedModule, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-reboot"
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [v1]))
    port = observer.report(dev, _running(1, 1), timeout=240)["modules"]["mnist"]["port"]
    run = json.loads((agent.data_dir / "runtime" / "run" / "mnist.a" / "run.json").read_text())
    agent.kill()
    for pid in (run["supervisorPid"], run["pid"]):  # a reboot: nothing survives but the disk
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert _refuses_within(port, 10)
    before = len(agent.log())
    started = time.monotonic()
    agent.start()
    deadline = started + 8  # under the 10 s cool-off a crash would wait out
    while "restart mnist.a took" not in agent.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    log = agent.log()[before:]
    assert "restart mnist.a took" in log, log
    assert "install" not in log
    deadline = time.monotonic() + 60
    while _refuses(port) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert infer(port) == 200


def test_broker_outage_modules_keep_serving_and_telemetry_arrives_whole_and_in_order(
    world: AgentWorld, v1: SignedModule, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-outage"
    agent = agents(dev, mosquitto.url, telemetry_interval=0.5).start()
    observer.desired(dev, world.document(dev, 1, [v1]))
    port = observer.report(dev, _running(1, 1), timeout=240)["modules"]["mnist"]["port"]
    for _ in range(5):
        assert infer(port) == 200
    observer.wait_for(lambda t, _p: t.endswith(f"{dev}/telemetry"), timeout=30)

    mosquitto.stop()
    for _ in range(10):
        assert infer(port) == 200  # the module serves while the broker is gone
        time.sleep(0.3)
    mosquitto.start()

    def samples() -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for payload in observer.payloads(f"{dev}/telemetry"):
            batch = json.loads(payload)
            parse_telemetry(batch)  # the hub's own schema accepts it
            assert set(batch) == {"schemaVersion", "deviceId", "samples", "dropped"}
            assert batch["deviceId"] == dev and batch["schemaVersion"] == 2 and batch["dropped"] == 0
            for sample in batch["samples"]:
                assert set(sample) == {"time", "seq", "cpuPercent", "memoryBytes", "modules"}
                found[sample["seq"]] = sample
        return found

    deadline = time.monotonic() + 60
    while True:
        found = samples()
        requests = sum(s["modules"].get("mnist", {}).get("requests", 0) for s in found.values())
        if requests >= 15 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert requests >= 15, f"only {requests} requests in telemetry: {agent.log()[-2000:]}"
    seqs = sorted(found)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a sample was lost"
    arrival = [s["seq"] for p in observer.payloads(f"{dev}/telemetry") for s in json.loads(p)["samples"]]
    assert arrival == sorted(arrival) or len(set(arrival)) < len(arrival)  # in order (a re-sent batch may repeat)
    assert max(s["memoryBytes"] for s in found.values()) > 10 * 2**20
    busy = [s["modules"]["mnist"] for s in found.values() if s["modules"].get("mnist", {}).get("requests")]
    assert {m["version"] for m in busy} == {1}  # the module version the sample measured
    assert all(m["serverErrors"] == m["clientErrors"] == m["errors"] == 0 for m in busy)
    latency = busy[0]["latencyMs"]
    assert latency["p99"] >= latency["p50"] > 0
    assert "disconnected" in agent.log()


def test_a_fixed_port_survives_a_blue_green_update(
    world: AgentWorld, v1: SignedModule, v2: SignedModule, mosquitto: Any, observer: Observer,
    agents: Callable[..., AgentProcess],
) -> None:
    dev = "dev-fixed"
    fixed = free_port()
    agent = agents(dev, mosquitto.url).start()
    settings = {"mnist": ModuleSettings(port=fixed)}
    observer.desired(dev, world.document(dev, 1, [v1], settings=settings))
    first = observer.report(dev, _running(1, 1), timeout=240)["modules"]["mnist"]
    assert first["port"] == fixed and infer(fixed) == 200
    observer.desired(dev, world.document(dev, 2, [v2], settings=settings))
    second = observer.report(dev, _running(2, 2), timeout=120)["modules"]["mnist"]
    assert (second["service"], second["port"]) == ("mnist.b", fixed)
    assert infer(fixed) == 200
    assert agent.stop() == 0


def test_after_a_kill_the_cached_document_is_applied_again_without_a_broker(
    world: AgentWorld, v1: SignedModule, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    from edgeship.agent.runtimes.process import ProcessRuntime

    dev = "dev-offline"
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [v1]))
    port = observer.report(dev, _running(1, 1), timeout=240)["modules"]["mnist"]["port"]
    agent.kill()
    mosquitto.stop()
    ProcessRuntime(agent.data_dir / "runtime").remove("mnist.a")  # the module is gone too
    assert _refuses(port)
    before, fetched = len(agent.log()), len(world.blobs.requests)
    agent.start()
    state = agent.data_dir / "state" / "agent.json"
    deadline = time.monotonic() + 120
    new_port = None
    while time.monotonic() < deadline:
        recorded = json.loads(state.read_text())
        service = recorded["active"].get("mnist")
        if service and recorded["services"].get(service, {}).get("phase") == "installed":
            new_port = recorded["services"][service]["port"]
            if not _refuses(new_port):
                break
        time.sleep(0.5)
    assert new_port is not None and infer(new_port) == 200  # from the cached document and blobs alone
    log = agent.log()[before:]
    assert "re-applying cached document 1" in log and "download mnist" in log
    assert len(world.blobs.requests) == fetched  # the blob came from the cache: no network
    mosquitto.start()


def test_a_kill_in_the_middle_of_an_update_leaves_no_half_installed_slot(
    world: AgentWorld, v1: SignedModule, v2: SignedModule, mosquitto: Any, observer: Observer,
    agents: Callable[..., AgentProcess],
) -> None:
    dev = "dev-midway"
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [v1]))
    port1 = observer.report(dev, _running(1, 1), timeout=240)["modules"]["mnist"]["port"]
    observer.desired(dev, world.document(dev, 2, [v2]))
    deadline = time.monotonic() + 60
    while "start_candidate mnist.b" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.kill()  # the candidate is installed (maybe started), not yet active
    assert infer(port1) == 200
    mark = len(observer.messages)
    agent.start()
    done = observer.report(dev, _running(2, 2), after=mark, timeout=120)["modules"]["mnist"]
    assert done["service"] == "mnist.b"
    state = agent.data_dir / "state" / "agent.json"
    deadline = time.monotonic() + 30  # the old slot is removed just after the report of the new one
    while set(json.loads(state.read_text())["services"]) != {"mnist.b"} and time.monotonic() < deadline:
        time.sleep(0.1)
    recorded = json.loads(state.read_text())
    assert set(recorded["services"]) == {"mnist.b"} and recorded["active"] == {"mnist": "mnist.b"}
    assert sorted(p.name for p in (agent.data_dir / "runtime" / "run").iterdir()) == ["mnist.b"]
    assert sorted(p.name for p in (agent.data_dir / "modules").iterdir()) == ["mnist.b"]
    assert infer(done["port"]) == 200


SLOW_INIT = '''"""init() takes a while (a big model loading), then the module serves."""

import time


def init():
    time.sleep(15)


def run(data):
    return data
'''


def test_direct_methods_answer_while_a_slow_update_is_being_applied(
    world: AgentWorld, v1: SignedModule, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    dev = "dev-methods"
    aux = world.module("aux")
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [v1, aux]))

    def both_running(report: dict[str, Any]) -> bool:
        return _running(1, 1)(report) and (report["modules"].get("aux") or {}).get("status") == "running"

    observer.report(dev, both_running, timeout=240)
    aux_pid = _pid(agent, "aux.a")

    script = tmp_path / "slow_init.py"
    script.write_text(SLOW_INIT)
    slow = world.module("mnist", entry_script=script)
    observer.desired(dev, world.document(dev, 2, [slow, aux]))
    deadline = time.monotonic() + 120
    while "health_check mnist.b" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "health_check mnist.b" in agent.log(), agent.log()[-2000:]

    # The loop is inside mnist.b's health check (init() sleeps): methods answer beside it.
    aux_logs = observer.call(dev, "logs", {"module": "aux", "tail": 5}, "r-aux-logs")
    old_logs = observer.call(dev, "logs", {"module": "mnist", "tail": 5}, "r-mnist-logs")
    busy = observer.call(dev, "restart", {"module": "mnist"}, "r-mnist-restart")
    restarted = observer.call(dev, "restart", {"module": "aux"}, "r-aux-restart", timeout=60)
    answered = len(observer.messages)

    applied = _running(slow.version, 2)
    done = observer.report(dev, applied, timeout=120)
    reported = f"edgeship/v1/devices/{dev}/reported"
    first_applied = next(
        i for i, (t, p, _r) in enumerate(observer.messages) if t == reported and p and applied(json.loads(p))
    )
    assert first_applied >= answered, "a method answer waited for the update to finish"
    assert aux_logs["status"] == 200 and aux_logs["result"]["service"] == "aux.a"
    assert old_logs["status"] == 200 and old_logs["result"]["service"] == "mnist.a"
    assert busy["status"] == 409 and "being updated" in busy["error"]
    assert restarted["status"] == 200 and restarted["result"]["service"] == "aux.a"
    assert _pid(agent, "aux.a") != aux_pid
    assert done["modules"]["mnist"]["service"] == "mnist.b"
    assert done["modules"]["aux"]["status"] == "running"
    assert "method logs (r-aux-logs): 200" in agent.log()
    assert agent.stop() == 0
