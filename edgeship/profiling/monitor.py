"""Peak memory and CPU of a process and its children, sampled while the load runs.

Memory is the sum of resident set sizes over the tree (the scoring server and its
workers); CPU is cores in use (user + system time per wall second), over each
sampling interval for the peak and over the whole window for the mean.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

__all__ = ["ResourceMonitor", "ResourceUse"]


@dataclass(frozen=True)
class ResourceUse:
    peak_memory_bytes: int
    peak_cpu_cores: float
    mean_cpu_cores: float


class ResourceMonitor:
    """``with ResourceMonitor(pid) as monitor: ...`` then ``monitor.result``."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="profile-monitor", daemon=True)
        self._cpu: dict[int, float] = {}  # pid -> cpu seconds seen so far
        self._peak_memory = 0
        self._peak_cpu = 0.0
        self._total_cpu = 0.0
        self._began = 0.0
        self._ended = 0.0

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sample(self) -> float:
        """Update the peak memory; return CPU seconds used since the last sample."""
        memory, used = 0, 0.0
        for process in self._tree():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory += process.memory_info().rss
            except psutil.Error:
                continue
            total = times.user + times.system
            used += total - self._cpu.get(process.pid, total if self._began else 0.0)
            self._cpu[process.pid] = total
        self._peak_memory = max(self._peak_memory, memory)
        return used

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self._interval):
            used = self._sample()
            now = time.perf_counter()
            self._total_cpu += used
            self._peak_cpu = max(self._peak_cpu, used / max(now - last, 1e-6))
            last = now

    def __enter__(self) -> ResourceMonitor:
        self._sample()  # baseline CPU times: only what the window uses is counted
        self._began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._total_cpu += self._sample()
        self._ended = time.perf_counter()

    @property
    def result(self) -> ResourceUse:
        wall = max(self._ended - self._began, 1e-6)
        return ResourceUse(self._peak_memory, self._peak_cpu, self._total_cpu / wall)
