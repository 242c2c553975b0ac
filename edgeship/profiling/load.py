"""A closed-loop load generator: ``concurrency`` clients, each sending its next request when the last returns.

httpx clients (keep-alive) on a thread pool: a fixed number of requests in flight,
a warm-up that is not measured, then a fixed duration. In a closed loop Little's
law holds by construction: throughput * mean latency = concurrency, less the
client's own time between requests, which :attr:`LoadStats.busy_fraction` shows.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

__all__ = ["LoadSettings", "LoadStats", "run_load"]

_MAX_ERROR_TEXTS = 5


@dataclass(frozen=True)
class LoadSettings:
    concurrency: int = 1  # requests in flight
    duration_s: float = 10.0  # measured time, after the warm-up
    warmup_requests: int = 10  # sent (and not measured) before the clock starts
    request_timeout_s: float = 30.0


@dataclass
class LoadStats:
    latencies_s: list[float]  # of successful requests, in completion order
    errors: int
    error_texts: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    concurrency: int = 1

    @property
    def total(self) -> int:
        return len(self.latencies_s) + self.errors

    @property
    def throughput(self) -> float:
        """Completed requests per second (successes and errors)."""
        return self.total / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
        return ordered[rank] * 1000

    @property
    def mean_ms(self) -> float | None:
        return sum(self.latencies_s) / len(self.latencies_s) * 1000 if self.latencies_s else None

    @property
    def busy_fraction(self) -> float | None:
        """throughput * mean latency / concurrency: 1.0 when every client always had a request out."""
        mean = self.mean_ms
        return None if mean is None else self.throughput * mean / 1000 / self.concurrency


def run_load(url: str, bodies: list[bytes], settings: LoadSettings) -> LoadStats:
    """POST ``bodies`` round-robin to ``url`` and measure; never raises for a failed request."""
    order = itertools.count()
    lock = threading.Lock()
    stats = LoadStats([], 0, concurrency=settings.concurrency)
    headers = {"Content-Type": "application/json"}

    def one(client: httpx.Client) -> tuple[float, str | None]:
        body = bodies[next(order) % len(bodies)]
        began = time.perf_counter()
        try:
            reply = client.post(url, content=body, headers=headers)
            error = None if reply.status_code < 400 else f"HTTP {reply.status_code}: {reply.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - began, error

    warmups = itertools.count()
    start = threading.Barrier(settings.concurrency + 1)
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(timeout=settings.request_timeout_s) as client:
            while next(warmups) < settings.warmup_requests:
                one(client)
            start.wait()
            while not stop.is_set():
                latency, error = one(client)
                if stop.is_set():
                    break  # finished after the window closed: not counted, as it was not timed whole within it
                with lock:
                    if error is None:
                        stats.latencies_s.append(latency)
                    else:
                        stats.errors += 1
                        if len(stats.error_texts) < _MAX_ERROR_TEXTS:
                            stats.error_texts.append(error)

    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="profile-load") as pool:
        futures = [pool.submit(client_loop) for _ in range(settings.concurrency)]
        start.wait()
        began = time.perf_counter()
        time.sleep(settings.duration_s)
        stop.set()
        stats.wall_s = time.perf_counter() - began
        for future in futures:
            future.result()
    return stats
