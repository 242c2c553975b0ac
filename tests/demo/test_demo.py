"""``edgeship demo`` end to end, as the README's main job: a real hub, broker, three agents and modules.

One run (about a minute here) checks what the demo promises: both lab devices serve
v1 and then v2 and predict the true labels, the field device gets nothing, and the
demo leaves no process or folder behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def test_demo_deploys_by_tags_scores_updates_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "120", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "edgeship", "demo", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    scored = re.findall(r"(lab-\d) digits:(\d) on port \d+: predicted (\[[^]]*\]), true (\[[^]]*\])", out)
    assert sorted((d, v) for d, v, _, _ in scored) == [("lab-1", "1"), ("lab-1", "2"), ("lab-2", "1"), ("lab-2", "2")]
    for _, _, predicted, true in scored:
        assert predicted == true, out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "digits:2" in rows["lab-1"] and "digits:2" in rows["lab-2"], out
    assert "digits" not in rows["field-1"], out
    assert "Demo finished" in out
    # the dashboard's URL and a token to sign in with, printed once the hub is up (the demo checked it answers)
    assert re.search(r"dashboard http://127\.0\.0\.1:\d+/ui/ \(sign in with the operator token esh_\S+\)", out), out
    # (onnxruntime itself writes a small '.ses' file into TMPDIR on import; that one is not ours)
    assert list(tmp_path.glob("edgeship-demo-*")) == [], "the demo left its temporary folder behind"
    assert _children_of(os.getpid()) == [], "the demo left processes behind"


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine")
    done = subprocess.run(
        [sys.executable, "-m", "edgeship", "demo", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "not empty" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "something").read_text() == "mine"
