"""What the process runtime and its supervisor share: file names and process identity.

Kept apart from ``supervisor.py`` so the runtime never imports the module that
``python -m`` runs as the supervisor (runpy warns when a package has already
imported the module it is asked to run).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LOG_FILE", "RUN_FILE", "SERVICE_FILE", "exit_code_of", "process_start_time"]

SERVICE_FILE = "service.json"
RUN_FILE = "run.json"
LOG_FILE = "server.log"


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (``/proc/PID/stat`` field 22), None if gone.

    A pid plus its start time names one process for good: pids are reused, start
    times are not. A zombie counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def exit_code_of(returncode: int) -> int:
    """Shell/Docker convention: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
