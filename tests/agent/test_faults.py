"""Fault points (``edgeship.agent.faults``): a bad setting is refused; an armed point SIGKILLs a real process."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from edgeship.agent import faults
from edgeship.errors import ConfigError

PROGRAM = """
from edgeship.agent import faults
faults.arm_from_env()
faults.point("verify", "other")
print("past verify of other", flush=True)
faults.point("verify", "mnist")
print("past verify of mnist", flush=True)
"""


def test_a_fault_setting_that_names_no_step_is_a_config_error_listing_the_steps() -> None:
    with pytest.raises(ConfigError, match="names no fault point; use one of download, verify"):
        faults.arm("verfiy:mnist")
    faults.arm(None)
    assert faults.armed() is None


@pytest.mark.parametrize(("setting", "killed"), [("verify:mnist", True), ("verify:aux", False), ("", False)])
def test_an_armed_point_kills_the_process_with_sigkill_only_for_its_module(setting: str, killed: bool) -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60,
                          env={"EDGESHIP_AGENT_FAULT": setting, "PATH": "/usr/bin:/bin"})
    assert "past verify of other" in done.stdout
    assert ("past verify of mnist" in done.stdout) is not killed
    assert done.returncode == (-signal.SIGKILL if killed else 0), done.stderr
