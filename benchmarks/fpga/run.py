"""FPGA int8 variants benchmark: size, agreement, accuracy drop, CPU latency, calibration time.

    python benchmarks/fpga/run.py [--runs 200] [--json results.json] [--only NAME ...]

Five models: the digits MLP trained by the example, the committed digits CNN, the
CNTK MNIST net, and two wider models trained here in seconds (``wide_models.py``:
a 784-1024-1024-10 MLP and a 64-128-256-channel CNN).
Two variants each, as ``edgeship fpga quantize`` makes them:

* FPGA: ``--scales pow2`` (symmetric int8 activations and weights, per-tensor);
* CPU: ``--scales float --per-channel`` (uint8 activations, int8 weights).

100-row calibration sets (digits rows 0-99), evaluation on digits rows 1000-1796
(CNTK and the wide MLP: upsampled to 28x28). The wide models train on rows 0-999. Latency: batch 1 and 32, one thread,
ORT_ENABLE_ALL for both models, fp32 and int8 interleaved sample by sample; the
ratio is the median of --runs per-sample ratios (see edgeship.fpga.report).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.datasets import load_digits

from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.graph import input_spec, load_model, prepare, score_output
from edgeship.fpga.quantize import QuantizeOptions, quantize, session
from edgeship.fpga.report import evaluate, latency, parameter_bytes

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "FPGA pow2": QuantizeOptions(),
    "CPU float/pc": QuantizeOptions(scales="float", per_channel=True),
}


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    data: np.ndarray
    labels: np.ndarray


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


def cases(tmp: Path, only: list[str] | None = None) -> list[Case]:
    """The benchmark models with their data; ``only`` limits them by name prefix."""
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    big = _upsample(x)
    wanted = (lambda name: any(name.startswith(o) for o in only)) if only else (lambda _name: True)
    out = []
    if wanted("digits MLP"):
        out.append(Case("digits MLP (skl2onnx)", _mlp(tmp), x, y))
    if wanted("digits CNN"):
        out.append(
            Case("digits CNN (torch)", ROOT / "tests" / "fpga" / "data" / "digits-cnn.onnx", x.reshape(-1, 1, 8, 8), y)
        )
    if wanted("MNIST CNTK"):
        out.append(Case("MNIST CNTK (opset 7)", ROOT / "tests" / "data" / "mnist-cntk-opset7.onnx", big, y))
    if wanted("wide MLP"):
        from wide_models import wide_mlp

        flat = (big.reshape(-1, 784) / 255.0).astype(np.float32)
        path = wide_mlp(flat[:1000], y[:1000], tmp / "wide-mlp.onnx")
        out.append(Case("wide MLP 784-1024-1024-10 (torch)", path, flat, y))
    if wanted("wide CNN"):
        from wide_models import wide_cnn

        images = x.reshape(-1, 1, 8, 8)
        path = wide_cnn(images[:1000], y[:1000], tmp / "wide-cnn.onnx")
        out.append(Case("wide CNN 64-128-256 (torch)", path, images, y))
    return out


def _flip_margins(fp32: onnx.ModelProto, int8: onnx.ModelProto, data: np.ndarray, spec_name: str) -> float | None:
    """Share of rows with a top-1/top-2 fp32 margin as small as the widest-margin row int8 flips (None: no flips)."""
    fixed = input_spec(fp32).shape[0]
    step = fixed or data.shape[0]
    name = score_output(fp32)
    scores = []
    for model in (fp32, int8):
        sess = session(model)
        parts = [sess.run([name], {spec_name: data[i : i + step]})[0] for i in range(0, data.shape[0] - step + 1, step)]
        scores.append(np.concatenate([np.asarray(p).reshape(len(p), -1) for p in parts]))
    top2 = np.sort(scores[0], axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = scores[0].argmax(1) != scores[1].argmax(1)
    if not flipped.any():
        return None
    ranks = (margin.argsort().argsort() + 1) / len(margin)  # share of rows with a margin this small or smaller
    return float(ranks[flipped].max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="model name prefixes, e.g. 'wide MLP'")
    args = parser.parse_args(argv)
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(tmp), args.only):
            fp32 = prepare(load_model(case.path))
            spec = input_spec(fp32)
            data, labels = case.data[1000:], case.labels[1000:]
            for variant, options in VARIANTS.items():
                start = time.perf_counter()
                int8 = quantize(fp32, NumpyCalibrationReader(case.data[:100], spec), options)
                calib = time.perf_counter() - start
                out = Path(tmp) / f"{case.path.stem}.int8.onnx"
                onnx.save(int8, str(out))
                ev = evaluate(fp32, int8, spec, data, labels)
                lat = latency(fp32, int8, spec, data, runs=args.runs)
                rows.append(
                    {
                        "model": case.name,
                        "variant": variant,
                        "fp32_bytes": case.path.stat().st_size,
                        "int8_bytes": out.stat().st_size,
                        "file_ratio": case.path.stat().st_size / out.stat().st_size,
                        "weights_ratio": parameter_bytes(fp32) / parameter_bytes(int8),
                        "top1_agreement": ev.top1_agreement,
                        "fp32_accuracy": ev.fp32_accuracy,
                        "int8_accuracy": ev.int8_accuracy,
                        "accuracy_drop_points": ev.accuracy_drop * 100,
                        "flips_within_margin_percentile": _flip_margins(fp32, int8, data, spec.name),
                        "latency_ratio_b1": lat.ratio(1),
                        "latency_ratio_b32": lat.ratio(32),
                        "fp32_ms_b32": lat.fp32_ms[32],
                        "int8_ms_b32": lat.int8_ms[32],
                        "calibration_s": calib,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; uptime before: {uptime[0]}; after: {uptime[1]}")
    print(
        "| model | variant | file fp32 → int8 (ratio) | weights ratio | top-1 agreement | fp32 acc | int8 acc "
        "| drop (points) | flipped rows among the | latency int8/fp32 b1 | b32 | fp32 / int8 ms b32 | calibration s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b1 = "N/A" if r["latency_ratio_b1"] is None else f"{r['latency_ratio_b1']:.2f}"
        b32 = "N/A" if r["latency_ratio_b32"] is None else f"{r['latency_ratio_b32']:.2f}"
        ms = "N/A" if r["fp32_ms_b32"] is None else f"{r['fp32_ms_b32']:.3f} / {r['int8_ms_b32']:.3f}"
        flips = r["flips_within_margin_percentile"]
        within = "no flips" if flips is None else f"closest {flips * 100:.1f} %"
        print(
            f"| {r['model']} | {r['variant']} | {r['fp32_bytes']} → {r['int8_bytes']} B ({r['file_ratio']:.2f}x) "
            f"| {r['weights_ratio']:.2f}x | {r['top1_agreement'] * 100:.2f} % | {r['fp32_accuracy'] * 100:.2f} % "
            f"| {r['int8_accuracy'] * 100:.2f} % | {r['accuracy_drop_points']:.2f} | {within} "
            f"| {b1} | {b32} | {ms} | {r['calibration_s']:.2f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"uptime": uptime, "onnxruntime": ort.__version__, "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
