"""``edgeship deployment create`` with rollout options, ``show [--watch]``, ``events``, ``pause|resume|approve|abort``.

The CLI runs in-process (typer's CliRunner) against a served hub (``rollout_hub``: the
REST app on uvicorn over the real services). Bad policies must fail before any
request: those tests point the CLI at a port nothing listens on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from parts import free_port
from rollout_hub import RolloutHub, rollout_hub
from typer.testing import CliRunner, Result

from edgeship.cli import app
from edgeship.cli._common import console as cli_console
from edgeship.errors import EdgeshipError

CREATE = ("deployment", "create", "lab", "-m", "digits:1", "-c", "tags.site = 'lab'")
DEFAULTS = {"soak": 0.0, "advancePercent": 100.0, "approveEachWave": False, "waveTimeout": 1800.0,
            "abortPercent": 0.0, "abortMin": 1, "abortOn": ["failed", "refused", "unhealthy"]}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RolloutHub]:
    with rollout_hub(tmp_path, devices=6) as served:
        monkeypatch.setenv("EDGESHIP_HUB_URL", served.url)
        monkeypatch.setenv("EDGESHIP_HUB_TOKEN", served.operator)
        monkeypatch.setenv("COLUMNS", "200")
        # the CLI's console reads COLUMNS when it is made, at import (a pytest-xdist worker sets 80 by then)
        monkeypatch.setattr(cli_console, "width", 200)
        yield served


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub URL nothing listens on: a command that sends a request fails with 'Cannot reach'."""
    monkeypatch.setenv("EDGESHIP_HUB_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("EDGESHIP_HUB_TOKEN", "esh_unused")


def run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def error_of(*args: str) -> str:
    """The one-sentence error a command ends with (what 'edgeship' prints after 'error:')."""
    result = run(*args, ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, EdgeshipError), (result.output, result.exception)
    message = str(result.exception)
    assert "\n" not in message, message
    return message


def policy_of(hub: RolloutHub, name: str = "lab") -> dict[str, Any]:
    return hub.services.rollouts.show(name).to_dict()["policy"]  # type: ignore[no-any-return]


def test_help_states_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("TERMINAL_WIDTH", "400")
    text = " ".join(run("deployment", "create", "--help").stdout.replace("│", " ").split())  # rich boxes the help
    for option in ("--waves", "--exponential", "--spread-by", "--soak", "--advance-percent", "--approve-each-wave",
                   "--wave-timeout", "--abort-percent", "--abort-min", "--abort-on", "--rollout-file"):
        assert option in text, option
    for default in ("Default: no waves, every targeted device at once", "Default 0.", "Default 100.",
                    "Default 30m.", "Default: abort on the first failed, refused or unhealthy device",
                    "timed-out (offline) devices are reported but do not abort", "Options override its keys"):
        assert default in text, default


def test_options_become_the_policy_on_the_hub(hub: RolloutHub) -> None:
    created = run(*CREATE, "--waves", "1,50%,100%", "--soak", "5m", "--advance-percent", "95", "--spread-by",
                  "tags.site", "--wave-timeout", "1h", "--abort-percent", "10", "--abort-min", "2", "--abort-on",
                  "failed,refused,timed-out", "--approve-each-wave")
    assert "Created deployment lab: 6 device(s) targeted; rollout rolling-out, wave 1 of 3" in created.stdout
    assert policy_of(hub) == {"waves": "1,50%,100%", "spreadBy": "tags.site", "soak": 300.0, "advancePercent": 95.0,
                              "approveEachWave": True, "waveTimeout": 3600.0, "abortPercent": 10.0, "abortMin": 2,
                              "abortOn": ["failed", "refused", "timed-out"]}


def test_without_rollout_options_every_device_gets_it_at_once(hub: RolloutHub) -> None:
    created = json.loads(run(*CREATE, "--json").stdout)
    assert created["rollout"] is None and created["status"]["counts"]["targeted"] == 6
    assert hub.received("lab") == {f"dev-{n}" for n in range(6)}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_the_rollout_file_is_read_and_options_override_its_keys(hub: RolloutHub, tmp_path: Path,
                                                                 suffix: str) -> None:
    policy = {"waves": "1,100%", "soak": "1m", "approveEachWave": True, "abortOn": ["failed"]}
    path = tmp_path / f"policy{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(policy))
    else:
        path.write_text("waves: 1,100%\nsoak: 1m\napproveEachWave: true\nabortOn: [failed]\n")
    run(*CREATE, "--rollout-file", str(path), "--soak", "2m", "--exponential", "1,2", "--no-approve-each-wave")
    assert policy_of(hub) == {**DEFAULTS, "exponential": [1, 2.0], "soak": 120.0, "abortOn": ["failed"]}


def test_gates_are_repeatable_options(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,100%", "--gate", "error_rate <= 1%", "--gate", "p99_ratio <= 1.5 over 5m")
    assert policy_of(hub)["gates"] == ["error_rate <= 1%", "p99_ratio <= 1.5 over 5m"]


def test_the_file_alone_is_a_policy(hub: RolloutHub, tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("waves: 1,3,6\nadvancePercent: 90\n")
    run(*CREATE, "--rollout-file", str(path))
    assert policy_of(hub) == {**DEFAULTS, "waves": "1,3,6", "advancePercent": 90.0}


@pytest.mark.parametrize(("options", "message"), [
    (["--waves", "1,x"], "--waves item 'x' is neither a device count"),
    (["--waves", "1,10%", "--advance-percent", "150"], "--advance-percent 150 must be between 0 and 100"),
    (["--waves", "1,10%", "--soak", "5x"], "--soak '5x' is not a duration"),
    (["--waves", "1,10%", "--gate", "error_rate <= 1"], "write error_rate as a percentage"),
    (["--waves", "1,10%", "--wave-timeout", "soon"], "--wave-timeout 'soon' is not a duration"),
    (["--exponential", "2"], "--exponential '2' must be BASE,FACTOR"),
    (["--exponential", "1,0.5"], "--exponential BASE,FACTOR needs BASE >= 1 device and FACTOR > 1"),
    (["--waves", "1,10%", "--exponential", "2,2"], "Give either --waves or --exponential, not both"),
    (["--waves", "1,10%", "--abort-on", "failed,crashed"], "--abort-on takes one or more of"),
    (["--waves", "1,10%", "--abort-min", "0"], "--abort-min must be at least 1 device"),
    (["--waves", "1,10%", "--spread-by", "site"], "--spread-by 'site' must name a tag"),
    (["--soak", "5m"], "A rollout needs waves: add --waves or --exponential to --soak"),
])
def test_bad_options_fail_before_any_request_naming_the_option(nowhere: None, options: list[str],
                                                              message: str) -> None:
    assert message in error_of(*CREATE, *options)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("list.yaml", "- waves: 1,10%\n", "must be a mapping of rollout options"),
    ("scalar.json", '"1,10%"', "must be a mapping of rollout options"),
    ("unknown.yaml", "waves: 1,10%\nwave: 1\n", "has unknown keys ['wave']"),
    ("broken.json", '{"waves": ', "is not valid JSON"),
    ("broken.yaml", "waves: [1,\n", "is not valid YAML"),
    ("soak.yaml", "waves: 1,10%\nsoak: soon\n", "key soak: soak 'soon' is not a duration"),
    ("share.json", '{"waves": "1,10%", "advancePercent": 150}', "key advancePercent: --advance-percent 150"),
    ("flag.yaml", "waves: 1,10%\napproveEachWave: maybe\n", "key approveEachWave"),
    ("inf.yaml", "waves: 1,10%\nsoak: .inf\n", "key soak"),
    ("nowaves.yaml", "soak: 5m\n", "A rollout needs waves"),
])
def test_a_bad_rollout_file_is_one_error_naming_the_file(nowhere: None, tmp_path: Path, name: str, text: str,
                                                         message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    error = error_of(*CREATE, "--rollout-file", str(path))
    assert message in error and (str(path) in error or "nowaves" in name), error


def test_a_missing_rollout_file_is_named(nowhere: None, tmp_path: Path) -> None:
    error = error_of(*CREATE, "--rollout-file", str(tmp_path / "nope.yaml"))
    assert error.startswith(f"Cannot read rollout file {tmp_path / 'nope.yaml'}")


def test_a_bad_option_is_one_line_on_stderr_with_exit_1(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "EDGESHIP_HUB_URL": f"http://127.0.0.1:{free_port()}"}
    done = subprocess.run([sys.executable, "-m", "edgeship", *CREATE, "--waves", "1,10%", "--advance-percent", "150"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --advance-percent 150 must be between 0 and 100."


def test_show_renders_the_rollout_and_json_is_the_hubs(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,3,6")
    shown = run("deployment", "show", "lab").stdout
    assert "rollout: rolling-out, wave 1 of 3" in shown and "waiting for:" in shown
    for column in ("targeted", "applied", "succeeded", "soaking", "pending", "failed", "refused", "timed-out"):
        assert column in shown, column
    assert "Targeted 6" in shown and "dev-0" in shown  # the per-device table stays
    as_json = json.loads(run("deployment", "show", "lab", "--json").stdout)
    assert as_json["rollout"] == hub.services.rollouts.show("lab").to_dict()


def test_show_of_an_aborted_rollout_names_tripped_devices(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,3,6")
    (first,) = hub.waves("lab")[1]
    hub.report(first, code=500, running=False)
    hub.tick()
    watched = run("deployment", "show", "lab", "--watch", "--interval", "0.2")  # over already: draws once
    assert "rollout: aborted, wave 1 of 3" in watched.stdout and f"tripped by: {first}" in watched.stdout
    assert "reason:" in watched.stdout


def test_watch_redraws_until_the_rollout_is_aborted(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,3,6")

    def abort_soon() -> None:
        time.sleep(1.0)
        hub.services.rollouts.abort("lab", actor="someone", reason="enough")

    thread = threading.Thread(target=abort_soon)
    thread.start()
    started = time.monotonic()
    watched = run("deployment", "show", "lab", "--watch", "--interval", "0.2")
    thread.join()
    assert time.monotonic() - started >= 1.0
    assert "rollout: aborted" in watched.stdout and "reason: enough" in watched.stdout
    assert "desired seq" not in watched.stdout  # live, the per-device table is left out (10,000 rows redrawn)


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT delivered and handled by default, as a terminal's shell starts a command.

    A pytest-xdist worker's state is inherited otherwise: in one full run the watch slept on
    through two SIGINTs (its stack in the failure), as if the signal were ignored or blocked.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_leaves_watch_quietly_with_exit_0(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,3,6")
    env = {**os.environ, "COLUMNS": "200", "EDGESHIP_HUB_URL": hub.url, "EDGESHIP_HUB_TOKEN": hub.operator,
           "PYTHONFAULTHANDLER": "1"}  # SIGABRT dumps every thread's stack, should it not stop
    proc = subprocess.Popen([sys.executable, "-m", "edgeship", "deployment", "show", "lab", "--watch",
                             "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_ctrl_c_as_in_a_terminal)  # fmt: skip
    try:
        time.sleep(4)  # started and watching (a rollout that does not move: it never ends by itself)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Seen once in a full run at load 5 (cause not found): a second Ctrl-C, as a user would press.
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                pytest.fail(f"watch did not stop at two Ctrl-C; its threads:\n{proc.communicate(timeout=10)[1]}")
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == "", err
    assert "rollout: rolling-out, wave 1 of 3" in out


def test_watch_without_a_rollout_and_with_json(hub: RolloutHub) -> None:
    run(*CREATE)
    assert "has no rollout to watch" in run("deployment", "show", "lab", "--watch").stdout
    assert "leave out --json" in error_of("deployment", "show", "lab", "--watch", "--json")


def test_pause_resume_approve_abort_and_events(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,3,6")
    paused = run("deployment", "pause", "lab", "--reason", "checking the dashboards").stdout
    assert "Paused the rollout of lab: paused, wave 1 of 3" in paused
    assert "is paused, so it cannot be paused" in error_of("deployment", "pause", "lab")
    assert "Resumed the rollout of lab: rolling-out" in run("deployment", "resume", "lab").stdout
    assert "approv" in error_of("deployment", "approve", "lab")
    aborted = json.loads(run("deployment", "abort", "lab", "--reason", "wrong model", "--json").stdout)
    assert aborted["state"] == "aborted" and aborted["reason"] == "wrong model"

    table = run("deployment", "events", "lab").stdout
    for text in ("actor", "action", "ops", "started", "paused", "resumed", "aborted", "checking the dashboards",
                 "wrong model"):
        assert text in table, text
    events = json.loads(run("deployment", "events", "lab", "--json").stdout)
    assert [(e["action"], e["actor"]) for e in events] == [
        ("started", "ops"), ("paused", "ops"), ("resumed", "ops"), ("aborted", "ops")]


def test_approve_moves_a_waiting_rollout_on(hub: RolloutHub) -> None:
    run(*CREATE, "--waves", "1,100%", "--approve-each-wave")
    (first,) = hub.waves("lab")[1]
    hub.report(first)
    hub.tick()
    assert "waiting for: approval" in run("deployment", "show", "lab").stdout
    approved = run("deployment", "approve", "lab", "--reason", "wave 1 healthy").stdout
    assert "Approved the rollout of lab: rolling-out, wave 2 of 2" in approved


def test_a_deployment_without_a_rollout_says_so(hub: RolloutHub) -> None:
    run(*CREATE)
    for command in ("events", "pause", "abort"):
        assert "every targeted device at once" in error_of("deployment", command, "lab"), command
    assert error_of("deployment", "events", "ghost") == "No deployment 'ghost' on the hub."
