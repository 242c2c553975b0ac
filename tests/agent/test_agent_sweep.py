"""The start-up sweep's rule (``edgeship.fsutil.sweep_scratch``): scratch of a dead writer goes, a live one's stays.

Real processes: a live writer is a running ``sleep``; a dead one is a process that has exited.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from edgeship.fsutil import atomic_dir, sweep_scratch


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    return int(subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout)


def test_scratch_of_a_dead_writer_and_of_this_process_is_swept_a_live_writers_and_other_names_stay(
    tmp_path: Path,
) -> None:
    live = subprocess.Popen(["sleep", "60"])
    try:
        dead = _dead_pid()
        names = {
            f".app.building-{dead}-x1": "dir",
            f".venv.building-{live.pid}-x2": "dir",
            f".agent.json.tmp-{dead}-x3": "file",
            f".mnist.a.old-{os.getpid()}": "dir",
            ".hidden": "dir",
            "mnist.a": "dir",
            f"app.building-{dead}-x4": "dir",  # no leading dot: not a scratch name
        }
        for name, kind in names.items():
            (tmp_path / name).mkdir() if kind == "dir" else (tmp_path / name).write_text("x")
        removed = sweep_scratch(tmp_path)
        assert sorted(p.name for p in removed) == sorted(
            [f".app.building-{dead}-x1", f".agent.json.tmp-{dead}-x3", f".mnist.a.old-{os.getpid()}"]
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f".venv.building-{live.pid}-x2", ".hidden", "mnist.a", f"app.building-{dead}-x4"]
        )
    finally:
        live.kill()
        live.wait()


def test_atomic_dir_scratch_carries_the_writers_pid_so_the_sweep_knows_it(tmp_path: Path) -> None:
    target = tmp_path / "app"
    with atomic_dir(target) as build:
        assert build.name.startswith(f".app.building-{os.getpid()}-")
        (build / "f").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["app"]
