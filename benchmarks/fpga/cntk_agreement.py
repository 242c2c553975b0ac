"""What it takes for the CNTK MNIST net's int8 variant to agree with fp32 on ≥ 99 % of digits.

    python benchmarks/fpga/cntk_agreement.py [--rows 100 1000]

Every calibration method, per-tensor and per-channel weights, 100 and 1000
calibration rows (digits 0-999, upsampled to 28x28, 0-255), and every way of
leaving one or two of the three compute nodes in float (what the budget search
does); evaluation on digits 1000-1796. Prints top-1 agreement and accuracy.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ROOT, _upsample

from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.graph import input_spec, load_model, prepare
from edgeship.fpga.quantize import METHODS, QuantizeOptions, quantizable_nodes, quantize
from edgeship.fpga.report import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100, 1000])
    args = parser.parse_args(argv)
    x, y = load_digits(return_X_y=True)
    data = _upsample(x.astype("float32"))
    fp32 = prepare(load_model(ROOT / "tests" / "data" / "mnist-cntk-opset7.onnx"))
    spec = input_spec(fp32)
    nodes = quantizable_nodes(fp32)
    print("| scales | method | per-channel | calibration rows | nodes in float | top-1 agreement | int8 accuracy |")
    print("|---|---|---|---|---|---|---|")
    trials = [
        ("pow2", method, per_channel, rows, excluded)
        for rows in args.rows
        for method in METHODS
        for per_channel in (False, True)
        for k in (0, 1, 2)
        for excluded in itertools.combinations(nodes, k)
    ] + [("float", "minmax", True, rows, ()) for rows in args.rows]
    for scales, method, per_channel, rows, excluded in trials:
        reader = NumpyCalibrationReader(data[:rows], spec)
        int8 = quantize(fp32, reader, QuantizeOptions(method, scales, per_channel, excluded))
        ev = evaluate(fp32, int8, spec, data[1000:], y[1000:])
        assert ev.int8_accuracy is not None
        print(
            f"| {scales} | {method} | {per_channel} | {rows} | {', '.join(excluded) or '-'} "
            f"| {ev.top1_agreement * 100:.2f} % | {ev.int8_accuracy * 100:.2f} % |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
