"""Where the CPU time of fp32 and int8 goes, per operator, from onnxruntime's profiler.

    python benchmarks/fpga/op_profile.py [--runs 200] [--scales float|pow2]

For each benchmark model: batch 32, one thread, ORT_ENABLE_ALL for both sessions.
Prints, per run, the microseconds of each kernel type (``*_kernel_time`` events,
after onnxruntime's graph fusion) and the rest of ``model_run`` (dispatch, memory
planning, Python binding), which no int8 kernel can make faster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import cases

from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.graph import input_spec, load_model, prepare, with_dynamic_batch
from edgeship.fpga.quantize import QuantizeOptions, quantize


def profile(model: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int, tmp: Path) -> dict[str, float]:
    """Microseconds per run by kernel op type, plus ``(outside kernels)`` and ``(model_run)``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "prof")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(10):
        sess.run(None, feed)
    trace = Path(sess.end_profiling())
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feed)
    os.unlink(trace)
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    os.unlink(trace)
    per_op: dict[str, float] = defaultdict(float)
    model_run = 0.0
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            per_op[ev["args"]["op_name"]] += ev["dur"]
        elif ev.get("cat") == "Session" and ev["name"] == "model_run":
            model_run += ev["dur"]
    out = {op: us / runs for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])}
    out["(outside kernels)"] = (model_run - sum(per_op.values())) / runs
    out["(model_run)"] = model_run / runs
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--scales", choices=("float", "pow2"), default="float")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for case in cases(tmp):
            fp32 = prepare(load_model(case.path))
            spec = input_spec(fp32)
            reader = NumpyCalibrationReader(case.data[:100], spec)
            int8 = quantize(fp32, reader, QuantizeOptions(scales=args.scales, per_channel=args.scales == "float"))
            if spec.shape[0] is not None:
                fp32, int8 = with_dynamic_batch(fp32), with_dynamic_batch(int8)
            feed = {spec.name: np.resize(case.data[1000:], (32, *case.data.shape[1:])).astype(np.float32)}
            a, b = profile(fp32, feed, args.runs, tmp), profile(int8, feed, args.runs, tmp)
            print(f"\n{case.name} — µs per batch-32 run (fp32 | int8 {args.scales})")
            for op in sorted(set(a) | set(b), key=lambda o: -(a.get(o, 0) + b.get(o, 0))):
                print(f"  {op:28s} {a.get(op, 0):9.1f} | {b.get(op, 0):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
