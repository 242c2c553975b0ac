"""The hub's issuing path alone: ``create_deployment`` for N devices, no broker, no devices.

Each repetition: a fresh hub over SQLite in a temp dir (the hub world of ``tests/hub``),
one module, N devices created (each gets its first document, which also starts the
signing workers), then ``create_deployment`` targeting all N by tag. Prints the wall
time until it returned (every document signed and stored), the request thread's CPU,
the signing workers' CPU and the load average; ``--profile`` adds a cProfile of the call.

    python benchmarks/fleet/hub_alone.py --devices 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "hub"))

from hub_world import HubWorld  # noqa: E402

from edgeship.hub.services import ModuleRefSpec, OfflineLink  # noqa: E402
from edgeship.hub.signing_pool import shared_pool  # noqa: E402


def _cpu_of(pids: Sequence[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def one(n: int, profile: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="edgeship-hub-alone-"))
    world = HubWorld(root)
    hub = world.services(f"sqlite:///{root / 'hub.db'}", link=OfflineLink())
    hub.catalog.upload_module(world.module("digits", 1))
    hub.fleet.create_devices([(f"dev-{i:05d}", {"fleet": "bench"}) for i in range(n)])
    pids = shared_pool().pids
    load = os.getloadavg()[0]
    workers = _cpu_of(pids)
    profiler = cProfile.Profile()
    started, cpu = time.perf_counter(), time.thread_time()
    if profile:
        profiler.enable()
    hub.deployments.create_deployment("fleet", "tags.fleet = 'bench'", [ModuleRefSpec("digits", 1, {"port": 5001})])
    if profile:
        profiler.disable()
    result = {"devices": n, "seconds": round(time.perf_counter() - started, 3),
              "request_cpu": round(time.thread_time() - cpu, 3), "workers_cpu": round(_cpu_of(pids) - workers, 3),
              "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    hub.store.close()
    if profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    for _ in range(args.repeat):
        print(json.dumps(one(args.devices, args.profile)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
