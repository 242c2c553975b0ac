"""What a device must look like after an agent was killed and came back (issue 13): checks on a real agent.

Used by the kill-point tests (``test_agent_kill_points.py``, ``test_agent_kill_points_docker.py``):

- :func:`serving_slot`: the slot ``state/agent.json`` names active, and its port;
- :func:`settled`: wait until the agent has removed every slot but the active ones;
- :func:`leftovers`: everything on the device the agent would not own or not clean up —
  scratch of atomic writes (``edgeship.fsutil``), ``.part`` files, module and service folders
  of no recorded service, recorded services that are not active, processes started from the
  agent's data folder outside the active slots' supervisors, and listening ports other than
  the active slots'.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from agent_world import AgentProcess

__all__ = ["leftovers", "recorded", "serving_slot", "settled"]

SCRATCH = re.compile(r"^\..+\.(?:tmp|building|old)-\d+")  # edgeship.fsutil's scratch names


def recorded(agent: AgentProcess) -> dict[str, Any]:
    return dict(json.loads((agent.data_dir / "state" / "agent.json").read_text()))


def serving_slot(agent: AgentProcess, module: str = "mnist") -> tuple[str, int] | None:
    """(service, port) of ``module``'s active slot as recorded, or None before the first switch."""
    try:
        state = recorded(agent)
    except FileNotFoundError:
        return None
    service = state["active"].get(module)
    if service is None:
        return None
    return service, int(state["services"][service]["port"])


def settled(agent: AgentProcess, timeout: float = 60.0) -> dict[str, Any]:
    """The recorded state once only active slots are left (old slots go just after the report)."""
    deadline = time.monotonic() + timeout
    while True:
        state = recorded(agent)
        if set(state["services"]) == set(state["active"].values()) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def _processes_under(data_dir: Path) -> dict[int, int]:
    """Live (not zombie) processes whose command line names ``data_dir``: pid -> parent pid."""
    found: dict[int, int] = {}
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if needle in cmdline and stat[0] != "Z":
            found[int(entry.name)] = int(stat[1])
    return found


def _listening_ports(pids: set[int]) -> set[int]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _scratch(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):  # symlinks (a shared venv folder) are not followed
        found += [str(Path(folder) / n) for n in dirs + files if SCRATCH.match(n)]
    return found


def leftovers(agent: AgentProcess, *, runtime: str = "process", venvs: Path | None = None) -> list[str]:
    """Every way the device differs from 'the active slots and the agent's caches, nothing else'."""
    problems: list[str] = []
    data = agent.data_dir
    state = recorded(agent)
    active = set(state["active"].values())
    if set(state["services"]) != active:
        problems.append(f"recorded services {sorted(state['services'])} are not the active slots {sorted(active)}")
    problems += [f"scratch left: {p}" for p in _scratch(data) + (_scratch(venvs) if venvs else [])]
    parts = sorted(p.name for p in (data / "blobs" / "partial").glob("*.part"))
    if parts:
        problems.append(f"partial downloads left although every wanted blob is cached: {parts}")
    modules = sorted(p.name for p in (data / "modules").iterdir()) if (data / "modules").is_dir() else []
    if set(modules) != active:
        problems.append(f"module folders {modules}, active slots {sorted(active)}")
    if runtime == "process":
        run = data / "runtime" / "run"
        services = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
        if set(services) != active:
            problems.append(f"process-runtime services {services}, active slots {sorted(active)}")
        processes = _processes_under(data)
        allowed: set[int] = set()
        for service in active:
            run_file = json.loads((run / service / "run.json").read_text())
            allowed.add(int(run_file["supervisorPid"]))
        grew = True
        while grew:  # the active supervisors and everything they started
            more = {pid for pid, parent in processes.items() if parent in allowed} - allowed
            allowed |= more
            grew = bool(more)
        stray = {pid: _cmdline(pid) for pid in processes if pid not in allowed}
        if stray:
            problems.append(f"processes left from the agent's data folder: {stray}")
        ports = _listening_ports(set(processes) | allowed)
        wanted = {int(state["services"][s]["port"]) for s in active}
        if ports != wanted:
            problems.append(f"listening ports {sorted(ports)}, active slots' ports {sorted(wanted)}")
    return problems


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"
