"""``SCORING_TIMEOUT_MS`` (Azure ML's variable; a deploymentconfig's ``scoringTimeoutMs``) bounds a ``/score`` call."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Server, run_cli

SLOW = """
import json, time

def init():
    pass

def run(data):
    seconds = json.loads(data)["sleep"]
    time.sleep(seconds)
    return {"slept": seconds}
"""


@pytest.fixture(scope="module")
def slow_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = tmp_path_factory.mktemp("slow") / "slow.py"
    script.write_text(SLOW)
    return script


def test_a_run_longer_than_the_timeout_is_answered_504_at_the_deadline(
    serve: Callable[..., Server], slow_script: Path
) -> None:
    server = serve("--entry-script", str(slow_script), env={"SCORING_TIMEOUT_MS": "400"})
    fast = server.client.post("/score", content=b'{"sleep": 0}')
    assert fast.status_code == 200 and fast.json() == {"slept": 0}
    began = time.monotonic()
    slow = server.client.post("/score", content=b'{"sleep": 3}')
    waited = time.monotonic() - began
    assert slow.status_code == 504
    assert slow.json()["message"].startswith("run() did not finish within 400 ms (SCORING_TIMEOUT_MS)")
    assert waited < 2.5  # answered at the deadline, not when run() returned
    assert server.client.get("/").status_code == 200  # liveness stays up while run() still sleeps


def test_an_unusable_timeout_stops_the_server_with_one_sentence(slow_script: Path, tmp_path: Path) -> None:
    done = run_cli(["--entry-script", str(slow_script), "--port", "1"], tmp_path, env={"SCORING_TIMEOUT_MS": "soon"})
    assert done.returncode == 1
    assert "SCORING_TIMEOUT_MS='soon' is not usable; give whole milliseconds from 1 to 3600000" in done.stderr
