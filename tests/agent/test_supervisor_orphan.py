"""The process runtime's supervisor never leaves a server nobody can find.

A restarted agent may remove a half-started slot's folder as an orphan before its
supervisor wrote ``run.json`` (the kill-at-any-step race of ADR 0021). Here the
supervisor cannot write ``run.json`` at all (it is a directory), as when its folder
is gone: it must kill the server it just started and exit, leaving no process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from edgeship.agent.runtimes.procinfo import RUN_FILE, SERVICE_FILE


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_a_supervisor_that_cannot_record_its_child_kills_it_and_exits(tmp_path: Path) -> None:
    marker = f"edgeship-orphan-{uuid.uuid4().hex}"
    service = tmp_path / "svc"
    service.mkdir()
    (service / SERVICE_FILE).write_text(json.dumps({
        "command": [sys.executable, "-c", "import time, sys; time.sleep(120)", marker],
        "cwd": str(service), "env": dict(os.environ), "restart": "always",
    }))
    (service / RUN_FILE).mkdir()  # run.json cannot be written, as when the folder was removed under it
    subprocess.run([sys.executable, "-m", "edgeship.agent.runtimes.supervisor", str(service)], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while (_processes_with(marker) or _processes_with(str(service))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == [], "the scoring server outlived its supervisor"
    assert _processes_with(str(service)) == [], "the supervisor did not exit"
    assert "started the scoring server" in (service / "server.log").read_text()
