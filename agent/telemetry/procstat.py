"""CPU time and resident memory of a module's processes, from ``/proc`` (Linux).

A scoring server may run workers as children, so a service's usage is its server
process plus its direct children. Missing processes count as zero (a service that
just exited is not an error for telemetry).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CLOCK_TICKS", "cpu_ticks", "process_tree", "rss_bytes"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # ticks per second


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children."""
    children: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pid]
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and len(fields) > 2 and fields[1] == str(pid):
                children.append(int(entry))
    return [pid, *children]


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of ``pid`` in clock ticks (0 if gone)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 13:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of /proc/PID/stat)


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (VmRSS; 0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0
