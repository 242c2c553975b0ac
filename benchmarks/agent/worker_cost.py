"""What the download worker costs (ADR 0046): one blob fetched through ``python -m edgeship.agent.worker``
against the same transfer in the agent's own process, side by side, alternating, in one run.

Both sides use the same code (``open_range`` and ``Body.copy`` of ``agent/fetch/bounded.py``,
the bytes written, hashed and fsynced),
the same real HTTP blob server (``tests/agent/blob_server.py``) on loopback, and the agent's
interpreter flags; the difference is the worker's interpreter start and imports (urllib,
http.client, email, ssl already in the page cache) and the JSON lines on its pipe.

    python benchmarks/agent/worker_cost.py --blobs 20 --size 20480
    python benchmarks/agent/worker_cost.py --blobs 5 --size 52428800
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "agent"))

from blob_server import BlobServer

from edgeship.agent.__main__ import PYTHON_FLAGS

_SIDE = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from edgeship.agent.fetch.bounded import Cancel, FetchLimits, open_range
from edgeship.agent.fetch.download import BlobCache
mode, url, root, blobs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
cache = BlobCache(root, url)
times = []
for digest, size in blobs:
    began = time.perf_counter()
    if mode == "worker":
        cache.fetch(f"/blobs/{digest}", digest, size)
    else:  # what BlobCache._transfer did in the agent's process before ADR 0046: write, hash, fsync
        sha = hashlib.sha256()
        with open_range(f"{url}/blobs/{digest}", 0, limits=FetchLimits(), cancel=Cancel()) as body, \
                (root / digest[7:]).open("wb") as out:
            def write(chunk):
                out.write(chunk)
                sha.update(chunk)
            body.copy(write, size)
            out.flush()
            os.fsync(out.fileno())
        assert "sha256:" + sha.hexdigest() == digest
    times.append(time.perf_counter() - began)
print(json.dumps(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=20, help="blobs fetched per side and round")
    parser.add_argument("--size", type=int, default=20 * 1024, help="bytes per blob")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each side once per round, alternating")
    args = parser.parse_args()
    load_start = os.getloadavg()
    results: dict[str, list[float]] = {"in-process": [], "worker": []}
    with tempfile.TemporaryDirectory(prefix="edgeship-worker-cost-") as tmp:
        server = BlobServer(Path(tmp) / "served")
        try:
            for round_ in range(args.rounds):
                for mode in ("in-process", "worker") if round_ % 2 == 0 else ("worker", "in-process"):
                    blobs = [(server.put(os.urandom(args.size)), args.size) for _ in range(args.blobs)]
                    root = Path(tmp) / f"{mode}-{round_}"
                    root.mkdir()
                    out = subprocess.run([sys.executable, *PYTHON_FLAGS, "-c", _SIDE, mode, server.url, str(root),
                                          json.dumps(blobs)], capture_output=True, text=True, check=True).stdout
                    results[mode] += json.loads(out)
        finally:
            server.close()
    summary = {mode: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "n": len(t)}
               for mode, t in results.items()}  # fmt: skip
    extra = summary["worker"]["median_s"] - summary["in-process"]["median_s"]
    print(json.dumps({"blob_bytes": args.size, "summary": summary, "worker_extra_median_s": extra,
                      "ratio_median": summary["worker"]["median_s"] / summary["in-process"]["median_s"],
                      "load_start": load_start, "load_end": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
