"""Where the agent's memory goes: resident set growth per import step, and tracemalloc by package.

Each step imports a group of modules into a fresh interpreter in the agent's order and
reads VmRSS after it, so a row is what that group adds on top of the rows above it
(shared dependencies count where they are first imported). ``--tracemalloc`` runs the
same imports under tracemalloc and prints the Python heap after each step (module
objects, code and data; native libraries' own memory shows only in the RSS rows).

    python benchmarks/agent/footprint.py                 # the RSS table
    python benchmarks/agent/footprint.py --tracemalloc   # plus the Python heap by package
    python benchmarks/agent/footprint.py --python-flags ''   # without the agent's -OO -X no_debug_ranges
    python -X importtime -m edgeship.agent --help 2>&1 | sort -t'|' -k2 -n | tail -30   # import time
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from edgeship.agent.__main__ import PYTHON_FLAGS

STEPS: list[tuple[str, list[str]]] = [
    ("interpreter + site (editable install finder)", []),
    ("logging, threading, queue, json, signal", ["logging", "threading", "queue", "json", "signal"]),
    ("ctypes (edgeship.agent.malloc; Ed25519 via ossl)", ["edgeship.agent.malloc"]),
    ("ssl (TLS to the broker)", ["ssl"]),
    ("paho-mqtt", ["paho.mqtt.client"]),
    ("edgeship.agent.config", ["edgeship.agent.config"]),
    ("edgeship.agent.link.mqtt", ["edgeship.agent.link.mqtt"]),
    ("edgeship.agent.decide (plan, accept, report)", ["edgeship.agent.decide.accept", "edgeship.agent.decide.report"]),
    ("edgeship.agent.execute + runtimes", ["edgeship.agent.execute", "edgeship.agent.runtimes.process"]),
    ("edgeship.agent.fetch", ["edgeship.agent.fetch.download"]),
    ("edgeship.agent.telemetry", ["edgeship.agent.telemetry.sampler"]),
    ("edgeship.agent.daemon (the rest)", ["edgeship.agent.daemon", "edgeship.agent.trust"]),
]

_PROBE = r"""
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
steps = json.loads(sys.argv[1])
rows = []
for label, modules in steps:
    for name in modules:
        __import__(name)
    rows.append((label, rss()))
heavy = sorted(m for m in ("pydantic", "pydantic_core", "cryptography", "sqlalchemy", "typer", "rich", "httpx",
                           "requests", "prometheus_client", "psutil", "docker", "sqlite3", "argparse", "urllib.request",
                           "http.client")
               if m in sys.modules)
print(json.dumps({"rows": rows, "heavy": heavy, "modules": len(sys.modules)}))
"""

_TRACE = r"""
import json, sys, tracemalloc
tracemalloc.start()
rows = []
for label, modules in json.loads(sys.argv[1]):
    for name in modules:
        __import__(name)
    rows.append((label, tracemalloc.get_traced_memory()[0]))
print(json.dumps(rows))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracemalloc", action="store_true", help="also the Python heap per package")
    parser.add_argument("--python-flags", default=" ".join(PYTHON_FLAGS),
                        help="interpreter flags (default: those 'edgeship agent run' passes)")  # fmt: skip
    args = parser.parse_args()
    steps = json.dumps(STEPS)
    flags = args.python_flags.split()
    out = json.loads(subprocess.run([sys.executable, *flags, "-c", _PROBE, steps], capture_output=True, text=True,
                                    check=True).stdout)  # fmt: skip
    previous = 0
    print(f"{'step':52s} {'RSS MiB':>8s} {'+MiB':>6s}")
    for label, kib in out["rows"]:
        print(f"{label:52s} {kib / 1024:8.1f} {(kib - previous) / 1024:+6.1f}")
        previous = kib
    print(f"modules loaded: {out['modules']}; heavy ones among them: {', '.join(out['heavy']) or 'none'}")
    if args.tracemalloc:
        heap = json.loads(subprocess.run([sys.executable, *flags, "-c", _TRACE, steps], capture_output=True, text=True,
                                         check=True).stdout)  # fmt: skip
        previous = 0
        print(f"\n{'Python heap (tracemalloc) after each step':52s} {'KiB':>8s} {'+KiB':>7s}")
        for label, size in heap:
            print(f"{label:52s} {size / 1024:8.0f} {(size - previous) / 1024:+7.0f}")
            previous = size
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
