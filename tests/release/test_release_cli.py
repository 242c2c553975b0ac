"""``edgeship release run|watch`` against a served hub, with a real registry, packager and signatures.

The hub is ``rollout_hub`` (tests/hub): the REST app on uvicorn over the real services,
devices dev-0..dev-5 tagged site=lab behind an in-memory link. The release side is the
hub's own workspace (the hub reads uploaded modules from it, as on one machine), with
the release key the hub's trust root names. Packaging reuses the demo's warm wheel
cache, and each test packages as few versions as it can: packaging is the slow step.

``release watch`` runs as a subprocess, killed with SIGKILL from outside while it
packages, and at named points (``EDGESHIP_FAULT``) right after packaging and right
after the deployment was created: a version is still released exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from parts import free_port
from rollout_hub import RolloutHub, rollout_hub
from typer.testing import CliRunner, Result

from edgeship.cli import app
from edgeship.demo.release import wheel_cache_dir
from edgeship.errors import EdgeshipError
from edgeship.hub.errors import HubNotFoundError
from edgeship.modules.store import ModuleStore
from edgeship.registry import Model
from edgeship.release import release_lock

MODEL_FILE = Path(__file__).resolve().parents[1] / "data" / "mnist-cntk-opset7.onnx"
CONDITION = "tags.site = 'lab'"
WAIT = 120.0  # seconds; a release packages a module (about 5 s here with a warm wheel cache)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RolloutHub]:
    with rollout_hub(tmp_path, devices=6) as served:
        wheels = served.workspace.cache_dir / "wheels"
        cache = wheel_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        wheels.symlink_to(cache, target_is_directory=True)
        monkeypatch.setenv("EDGESHIP_HOME", str(served.workspace.root))
        monkeypatch.setenv("EDGESHIP_HUB_URL", served.url)
        monkeypatch.setenv("EDGESHIP_HUB_TOKEN", served.operator)
        monkeypatch.setenv("COLUMNS", "200")
        yield served


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("waves: 1,100%\nsoak: 1m\n")
    return path


def register(hub: RolloutHub, **tags: str) -> int:
    return Model.register(hub.workspace, MODEL_FILE, "mnist", tags=tags, model_framework="onnx").version


def cli(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def error_of(*args: str) -> str:
    result = cli(*args, ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, EdgeshipError), (result.output, result.exception)
    assert "\n" not in str(result.exception)
    return str(result.exception)


def releases(hub: RolloutHub) -> dict[str, Any]:
    return {d.id: d for d in hub.services.deployments.list_deployments() if d.id.startswith("mnist-lab-v")}


def modules(hub: RolloutHub) -> list[str]:
    return [s.ref for s in ModuleStore(hub.workspace).list("mnist")]


def rollout_state(hub: RolloutHub, name: str) -> tuple[str, int] | None:
    try:
        view = hub.services.rollouts.show(name)
    except HubNotFoundError:
        return None
    return view.state, view.wave


def state_file(hub: RolloutHub) -> dict[str, Any]:
    return json.loads((hub.workspace.root / "releases" / "mnist-lab.json").read_text())  # type: ignore[no-any-return]


def wait_for(what: str, check: Callable[[], bool], process: subprocess.Popen[str] | None = None,
             timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the watch exited ({process.returncode}) before {what}: {out}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


RUN = ("release", "run", "-m", "mnist", "-d", "mnist-lab", "--no-image")


@pytest.mark.slow
def test_run_releases_the_latest_version_once_and_a_second_run_does_nothing(hub: RolloutHub, policy: Path) -> None:
    register(hub)
    register(hub)
    first = cli(*RUN, "-c", CONDITION, "-p", "10", "--rollout-file", str(policy))
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 3, first.stdout  # one line per step
    assert "packaged mnist:2 as module mnist:1 (signed" in lines[0]
    assert f"uploaded module mnist:1 to the hub at {hub.url}" in lines[1]
    assert ("created deployment mnist-lab-v2: mnist:1 to \"tags.site = 'lab'\" at priority 10, rollout rolling-out, "
            "wave 1 of 2") in lines[2]
    record = releases(hub)["mnist-lab-v2"]
    assert (record.target_condition, record.priority, [(m.name, m.version) for m in record.modules]) == (
        CONDITION, 10, [("mnist", 1)])
    assert rollout_state(hub, "mnist-lab-v2") == ("rolling-out", 1)
    assert hub.services.rollouts.show("mnist-lab-v2").to_dict()["policy"]["soak"] == 60.0
    assert hub.services.catalog.get_module("mnist", 1).manifest_digest == ModuleStore(hub.workspace).get(
        "mnist", 1).digest
    assert state_file(hub)["versions"]["2"]["step"] == "deployed"

    again = cli(*RUN, "-c", CONDITION, "-p", "10", "--rollout-file", str(policy))
    assert again.stdout.count("\n") == 1 and "nothing to release: mnist:2 is released already" in again.stdout
    assert list(releases(hub)) == ["mnist-lab-v2"] and modules(hub) == ["mnist:1"]  # nothing packaged or created

    older = cli(*RUN, "--version", "1")  # an explicit older version: a rollback, above every release
    assert "created deployment mnist-lab-v1: mnist:2 to \"tags.site = 'lab'\" at priority 11" in older.stdout
    assert releases(hub)["mnist-lab-v1"].priority == 11 and rollout_state(hub, "mnist-lab-v1") is None


def test_errors_are_one_sentence_and_come_before_any_packaging(hub: RolloutHub) -> None:
    register(hub, stage="staging")
    assert "The first release of mnist-lab needs a target condition" in error_of(*RUN)
    assert "mnist:7 is not registered or does not carry the --tag values" in error_of(*RUN, "--version", "7")
    assert "is not a file" in error_of(*RUN, "--ic", "missing.json", "-c", CONDITION)
    assert "A rollout needs waves" in error_of(*RUN, "-c", CONDITION, "--soak", "1m")
    nothing = cli(*RUN, "-c", CONDITION, "-t", "stage=production")
    assert "nothing to release: no version of mnist matches" in nothing.stdout
    with release_lock(hub.workspace, "mnist-lab"):
        assert f"Another 'edgeship release' (pid {os.getpid()}) is releasing deployment mnist-lab" in error_of(
            *RUN, "-c", CONDITION)
    assert modules(hub) == [] and releases(hub) == {}


def start_watch(hub: RolloutHub, *args: str, fault: str | None = None, **extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "EDGESHIP_HOME": str(hub.workspace.root), "EDGESHIP_HUB_URL": hub.url,
           "EDGESHIP_HUB_TOKEN": hub.operator, "COLUMNS": "300", **extra}
    env.pop("EDGESHIP_FAULT", None)
    if fault:
        env["EDGESHIP_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "edgeship", "release", "watch", "-m", "mnist", "-d", "mnist-lab", "--no-image",
         "--interval", "0.3", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    return out


@pytest.mark.slow
def test_watch_releases_each_new_version_within_seconds(hub: RolloutHub, policy: Path) -> None:
    watch = start_watch(hub, "-c", CONDITION, "--rollout-file", str(policy), "-p", "5", "--tag", "stage=prod")
    try:
        register(hub, stage="dev")  # not for this watch
        register(hub, stage="prod")
        registered = time.monotonic()
        wait_for("mnist-lab-v2", lambda: "mnist-lab-v2" in releases(hub), watch)
        took = time.monotonic() - registered
        assert took < 30, took  # a poll, packaging (about 5 s) and the upload
        assert rollout_state(hub, "mnist-lab-v2") == ("rolling-out", 1)
        register(hub, stage="prod")
        wait_for("mnist-lab-v3", lambda: "mnist-lab-v3" in releases(hub), watch)
        v3 = releases(hub)["mnist-lab-v3"]
        assert v3.priority == 6 and v3.target_condition == CONDITION  # above v2, same devices
        assert rollout_state(hub, "mnist-lab-v3") == ("rolling-out", 1)
        assert "mnist-lab-v2" in releases(hub)  # what an abort of v3 falls back to
        hub.services.rollouts.abort("mnist-lab-v3", actor="ops", reason="bad answers")
        time.sleep(3)  # about ten passes: the watch logs the change once
    finally:
        out = stop(watch)
    assert watch.returncode == 0, out
    assert sorted(releases(hub)) == ["mnist-lab-v2", "mnist-lab-v3"] and modules(hub) == ["mnist:1", "mnist:2"]
    assert "watching model mnist with stage=prod every 0.3 s for deployment mnist-lab" in out
    assert out.count("packaged mnist:") == 2 and out.count("created deployment") == 2, out
    # Logged once: as a change, or already in the "created deployment" line when the abort came before the watch
    # read the new deployment back (the hub lists it a moment before the watch's create call returns).
    aborted = [line for line in out.splitlines()
               if "deployment mnist-lab-v3:" in line and "rollout aborted, wave 1 of 2 (" in line]
    assert len(aborted) == 1, out
    assert "waiting: mnist:3 is released already" in out, out
    assert out.rstrip().endswith("stopped"), out


@pytest.mark.slow
def test_a_watch_killed_at_any_step_releases_each_version_once(hub: RolloutHub, policy: Path) -> None:
    args = ("-c", CONDITION, "--rollout-file", str(policy))

    # v1: SIGKILL from outside while it packages; the restarted watch packages again and releases once
    register(hub)
    watch = start_watch(hub, *args)
    wait_for("packaging to start", lambda: _step(hub, "1") == "packaging", watch)
    watch.kill()
    watch.wait(10)
    watch = start_watch(hub, *args)
    wait_for("mnist-lab-v1", lambda: "mnist-lab-v1" in releases(hub), watch)
    stop(watch)
    assert list(releases(hub)) == ["mnist-lab-v1"] and _step(hub, "1") == "deployed"
    leftovers = list((hub.workspace.root / "releases" / ".build").iterdir())
    assert leftovers == [], leftovers  # the killed run's scratch was swept

    # v2: killed right after packaging, before the module was recorded: the module is reused, not packaged again
    register(hub)
    killed = start_watch(hub, *args, fault="release.after-package")
    assert killed.wait(WAIT) == -signal.SIGKILL
    stored = modules(hub)
    assert _step(hub, "2") == "packaging" and "mnist-lab-v2" not in releases(hub)
    watch = start_watch(hub, *args)
    wait_for("mnist-lab-v2", lambda: "mnist-lab-v2" in releases(hub), watch)
    out = stop(watch)
    assert modules(hub) == stored, out
    assert f"module {stored[-1]} of mnist:2 packaged before; not packaging it again" in out

    # v3: killed right after the hub created the deployment, before the state file said so: nothing is redone
    register(hub)
    killed = start_watch(hub, *args, fault="release.after-deploy")
    assert killed.wait(WAIT) == -signal.SIGKILL
    assert "mnist-lab-v3" in releases(hub) and _step(hub, "3") == "uploaded"
    before = modules(hub)
    watch = start_watch(hub, *args, "--once")
    out, _ = watch.communicate(timeout=WAIT)
    assert watch.returncode == 0, out
    assert "waiting: mnist:3 is released already" in out and "created deployment" not in out, out
    assert _step(hub, "3") == "deployed" and modules(hub) == before
    assert sorted(releases(hub)) == ["mnist-lab-v1", "mnist-lab-v2", "mnist-lab-v3"]
    priorities = [releases(hub)[f"mnist-lab-v{n}"].priority for n in (1, 2, 3)]
    assert priorities == [0, 1, 2]


def test_watch_retries_a_silent_hub_gives_up_a_failing_version_and_ends_on_a_refused_token(
        hub: RolloutHub, tmp_path: Path) -> None:
    register(hub)
    silent = start_watch(hub, "-c", CONDITION, "--once", EDGESHIP_HUB_URL=f"http://127.0.0.1:{free_port()}")
    out, _ = silent.communicate(timeout=60)
    assert silent.returncode == 0 and out.count("the hub did not answer, retrying every 0.3 s: Cannot reach") == 1, out

    bad = tmp_path / "inferenceconfig.json"
    bad.write_text("{not json")
    failing = start_watch(hub, "-c", CONDITION, "--ic", str(bad))
    time.sleep(3)  # about ten passes
    out = stop(failing)
    assert failing.returncode == 0, out
    assert out.count("release of mnist:1 failed: ") == 1 and "inferenceconfig.json" in out, out
    assert out.count("waiting: mnist:1 failed; a newer version is released when it is registered") == 1, out
    assert releases(hub) == {} and modules(hub) == []

    refused = start_watch(hub, "-c", CONDITION, EDGESHIP_HUB_TOKEN="esh_not-a-token")
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode == 1 and "Traceback" not in out, out
    assert out.strip().splitlines()[-1].startswith("error: "), out


def _step(hub: RolloutHub, version: str) -> str | None:
    try:
        return state_file(hub)["versions"].get(version, {}).get("step")  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None
