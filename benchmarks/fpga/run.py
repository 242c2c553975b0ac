"""FPGA int8 variants benchmark: size, agreement, accuracy drop, CPU latency, calibration time.

    python benchmarks/fpga/run.py [--runs 200] [--json results.json]

Uses the three real models of the tests (digits MLP trained by the example,
the committed digits CNN, the CNTK MNIST net), pow2 scales, minmax, per-tensor,
100-row calibration sets, evaluation on digits rows 1000-1796 (CNTK: upsampled
to 28x28, 0-255). Latency is single-threaded onnxruntime CPU, median of --runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.graph import input_spec, load_model, prepare
from edgeship.fpga.quantize import QuantizeOptions, quantize
from edgeship.fpga.report import evaluate, latency, parameter_bytes

ROOT = Path(__file__).resolve().parents[2]


def _mlp(tmp: Path) -> Path:
    spec = importlib.util.spec_from_file_location("digits_train", ROOT / "examples" / "sklearn-digits" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output-dir", str(tmp)])
    return tmp / "digits.onnx"


def _upsample(rows: np.ndarray) -> np.ndarray:
    idx = (np.arange(28) * 8) // 28
    return (rows.reshape(-1, 8, 8)[:, idx][:, :, idx] * (255.0 / 16.0)).astype(np.float32)[:, None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("digits MLP (skl2onnx)", _mlp(Path(tmp)), x),
            ("digits CNN (torch)", ROOT / "tests" / "fpga" / "data" / "digits-cnn.onnx", x.reshape(-1, 1, 8, 8)),
            ("MNIST CNTK (opset 7)", ROOT / "tests" / "data" / "mnist-cntk-opset7.onnx", _upsample(x)),
        ]
        for name, path, data in cases:
            fp32 = prepare(load_model(path))
            spec = input_spec(fp32)
            start = time.perf_counter()
            int8 = quantize(fp32, NumpyCalibrationReader(data[:100], spec), QuantizeOptions())
            calib = time.perf_counter() - start
            out = Path(tmp) / f"{path.stem}.int8.onnx"
            import onnx

            onnx.save(int8, str(out))
            ev = evaluate(fp32, int8, spec, data[1000:], y[1000:])
            lat = latency(fp32, int8, spec, data[1000:], runs=args.runs)
            rows.append(
                {
                    "model": name,
                    "file_ratio": path.stat().st_size / out.stat().st_size,
                    "weights_ratio": parameter_bytes(fp32) / parameter_bytes(int8),
                    "top1_agreement": ev.top1_agreement,
                    "fp32_accuracy": ev.fp32_accuracy,
                    "int8_accuracy": ev.int8_accuracy,
                    "accuracy_drop_points": ev.accuracy_drop * 100,
                    "latency_ratio_b1": lat.ratio(1),
                    "latency_ratio_b32": lat.ratio(32),
                    "fp32_ms_b32": lat.fp32_ms[32],
                    "int8_ms_b32": lat.int8_ms[32],
                    "calibration_s": calib,
                }
            )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {uptime}")
    print(
        "| model | file ratio | weights ratio | top-1 agreement | fp32 acc | int8 acc | drop (points) "
        "| latency int8/fp32 b1 | b32 | fp32/int8 ms b32 | calibration s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b1 = "N/A" if r["latency_ratio_b1"] is None else f"{r['latency_ratio_b1']:.2f}"
        b32 = "N/A" if r["latency_ratio_b32"] is None else f"{r['latency_ratio_b32']:.2f}"
        ms = "N/A" if r["fp32_ms_b32"] is None else f"{r['fp32_ms_b32']:.3f} / {r['int8_ms_b32']:.3f}"
        print(
            f"| {r['model']} | {r['file_ratio']:.2f}x | {r['weights_ratio']:.2f}x | {r['top1_agreement'] * 100:.2f} % "
            f"| {r['fp32_accuracy'] * 100:.2f} % | {r['int8_accuracy'] * 100:.2f} % | {r['accuracy_drop_points']:.2f} "
            f"| {b1} | {b32} | {ms} | {r['calibration_s']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"uptime": uptime, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
