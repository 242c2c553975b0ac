"""Batch benchmark: rows/s of 'edgeship batch run' with 1 and 2 workers against a plain loop calling run().

One run measures the three side by side, repeated, the order rotated each round:
the floor (floor.py: init() and run() in one process over the same mini-batches),
then 'edgeship batch run --workers 1' and '--workers 2' on the same table, script
and model. Wall time of each whole command (Python start, table read, init,
scoring, output written) is what is compared. Every output must be byte-identical
to the floor's. BLAS threads are pinned to one per process (OMP/OPENBLAS/MKL) so
"2 workers" means two cores, not two thread pools fighting over them.

    python benchmarks/batch/run.py [--rows 100000] [--mini-batch 1000] [--hidden 512] [--repeats 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "mlp_score.py"
SMALL_ROWS = 1000  # the same command on this many rows (one mini-batch) gives its fixed cost
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _prepare(work: Path, rows: int, hidden: int) -> tuple[Path, Path, Path]:
    from edgeship.registry import Model, ModelRef
    from edgeship.scoring.layout import azureml_model_dir, lay_out_models
    from edgeship.workspace import Workspace

    rng = np.random.default_rng(0)
    sizes = [64, hidden, hidden, 10]
    weights = {}
    for i in range(3):
        weights[f"w{i}"] = (rng.standard_normal((sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(np.float32)
        weights[f"b{i}"] = np.zeros(sizes[i + 1], dtype=np.float32)
    np.savez(work / "mlp.npz", **weights)
    ws = Workspace.at(work / "ws")
    ws.create()
    Model.register(ws, work / "mlp.npz", "mlp")
    deployed = lay_out_models(ws, [ModelRef("mlp", 1)], work / "floor-models")
    table = pd.DataFrame(rng.integers(0, 17, size=(rows, 64)), columns=[f"p{i}" for i in range(64)])
    table.insert(0, "id", range(rows))
    table.to_csv(work / "table.csv", index=False)
    table.head(SMALL_ROWS).to_csv(work / "small.csv", index=False)
    return ws.root, work / "table.csv", Path(azureml_model_dir(work / "floor-models", deployed))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the command and every process it waited for."""
    env = {**os.environ, **THREADS}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _command(variant: str, table: Path, out: Path, model_dir: Path, ws_root: Path, mini_batch: int) -> list[str]:
    if variant == "floor":
        out.mkdir()
        target = out / "parallel_run_step.txt"
        return [sys.executable, str(HERE / "floor.py"), "--script", str(SCRIPT), "--table", str(table),
                "--model-dir", str(model_dir), "--rows", str(mini_batch), "--output", str(target)]
    return [sys.executable, "-m", "edgeship", "batch", "run", "-e", str(SCRIPT), "-i", str(table), "-o", str(out),
            "-m", "mlp:1", "--mini-batch-size", str(mini_batch), "--workers", variant[-1], "--json",
            "--workspace", str(ws_root)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mini-batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512, help="width of the MLP's two hidden layers")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict[str, list[float]] = {"floor": [], "workers-1": [], "workers-2": []}
    small: dict[str, list[float]] = {k: [] for k in results}
    cpus: dict[str, list[float]] = {k: [] for k in results}  # CPU seconds of each full run's process tree
    small_cpu: dict[str, list[float]] = {k: [] for k in results}
    with tempfile.TemporaryDirectory(prefix="edgeship-batch-bench-") as tmp:
        work = Path(tmp)
        ws_root, table, model_dir = _prepare(work, args.rows, args.hidden)
        variants = list(results)
        small_table = table.with_name("small.csv")
        for round_number in range(args.repeats):
            order = variants[round_number % 3 :] + variants[: round_number % 3]
            for variant in order:
                for size, source in (("small", small_table), ("full", table)):
                    out = work / f"out-{variant}-{size}-{round_number}"
                    wall, cpu = _timed(_command(variant, source, out, model_dir, ws_root, args.mini_batch))
                    (small if size == "small" else results)[variant].append(wall)
                    (small_cpu if size == "small" else cpus)[variant].append(cpu)
                    digest = _digest(out / "parallel_run_step.txt")
                    reference = work / f"out-floor-{size}-0" / "parallel_run_step.txt"
                    if reference.exists() and digest != _digest(reference):
                        raise SystemExit(f"{variant} round {round_number}: output differs from the floor's")
                rows_s = args.rows / results[variant][-1]
                marginal = (args.rows - SMALL_ROWS) / max(1e-6, results[variant][-1] - small[variant][-1])
                print(f"round {round_number} {variant:10s} {results[variant][-1]:7.2f} s {rows_s:10,.0f} rows/s"
                      f"   fixed {small[variant][-1]:5.2f} s   marginal {marginal:10,.0f} rows/s"
                      f"   cpu {cpus[variant][-1]:6.2f} s (fixed {small_cpu[variant][-1]:5.2f} s)", flush=True)
    load_end = os.getloadavg()
    summary = {}
    for variant, walls in results.items():
        ratios = [walls_floor / wall for walls_floor, wall in zip(results["floor"], walls, strict=True)]
        marginals = [(args.rows - SMALL_ROWS) / (w - f) for w, f in zip(walls, small[variant], strict=True)]
        per_1000 = [  # CPU ms per 1000 rows beyond the fixed cost
            (c - f) / (args.rows - SMALL_ROWS) * 1e6 for c, f in zip(cpus[variant], small_cpu[variant], strict=True)
        ]
        floor_marginals = [
            (args.rows - SMALL_ROWS) / (w - f) for w, f in zip(results["floor"], small["floor"], strict=True)
        ]
        summary[variant] = {
            "walls_s": [round(w, 3) for w in walls],
            "fixed_cost_s": [round(w, 3) for w in small[variant]],
            "median_rows_per_s": round(args.rows / statistics.median(walls), 1),
            "rows_per_s_vs_floor_per_round": [round(r, 3) for r in ratios],
            "median_marginal_rows_per_s": round(statistics.median(marginals), 1),
            "marginal_vs_floor_per_round": [round(m / f, 3) for m, f in zip(marginals, floor_marginals, strict=True)],
            "cpu_s": [round(c, 3) for c in cpus[variant]],
            "fixed_cpu_s": [round(c, 3) for c in small_cpu[variant]],
            "median_cpu_ms_per_1000_rows_marginal": round(statistics.median(per_1000), 2),
        }
    record = {
        "started": started,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "rows": args.rows,
        "mini_batch_rows": args.mini_batch,
        "hidden": args.hidden,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in load_end],
        "results": summary,
    }
    print(json.dumps(record, indent=2))
    if args.output:
        args.output.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
