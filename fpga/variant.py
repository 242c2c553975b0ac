"""``make_fpga_variant``: a registered fp32 ONNX model → a registered int8 variant with its report.

The steps are ordered so that bad input fails before any work and nothing is
registered unless the budget holds: load and check the model and the data,
prepare the graph, search for settings within budget (:mod:`edgeship.fpga.search`),
measure the report on the chosen variant, and only then register it — as the next
version of the parent's name (or ``new_name``), keeping the parent's file name so
an entry script that loads ``digits.onnx`` loads the variant unchanged.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeship.errors import AccuracyBudgetError, CalibrationDataError, UnsupportedModelError
from edgeship.fpga.calibration import NumpyCalibrationReader, check_samples, load_array, load_labels
from edgeship.fpga.graph import input_spec, load_model, prepare
from edgeship.fpga.quantize import METHODS, QuantizeOptions, quantizable_nodes, quantize
from edgeship.fpga.report import build_report, evaluate, latency, parameter_bytes
from edgeship.fpga.search import search
from edgeship.registry import Model, ModelRef
from edgeship.workspace import Workspace

__all__ = ["REPORT_PROPERTY", "VARIANT_TAG", "VariantRequest", "VariantResult", "make_fpga_variant", "onnx_file_of"]

VARIANT_TAG = "fpga-int8"
REPORT_PROPERTY = "quantization_report"
_PURPOSE = {
    "pow2": "FPGA: symmetric int8, power-of-two scales",
    "float": "CPU: uint8 activations, int8 weights, float scales",
}


@dataclass(frozen=True)
class VariantRequest:
    """What ``edgeship fpga quantize`` asks for; budgets are fractions (0.01 = one point)."""

    model: ModelRef
    calibration: Path
    eval_data: Path | None = None
    labels: Path | None = None
    max_accuracy_drop: float = 0.01
    method: str = "minmax"
    scales: str = "pow2"
    per_channel: bool = False
    new_name: str | None = None
    max_excluded: int = 4
    latency_runs: int = 50


@dataclass(frozen=True)
class VariantResult:
    model: Model
    report: dict[str, object]


def onnx_file_of(path: Path) -> Path:
    """The model file itself, or the single ``.onnx`` inside a folder model."""
    if path.is_file():
        return path
    found = sorted(path.rglob("*.onnx"))
    if len(found) != 1:
        raise UnsupportedModelError(
            f"Model folder {path.name} holds {len(found)} .onnx files; an FPGA variant needs exactly one."
        )
    return found[0]


def make_fpga_variant(
    workspace: Workspace, request: VariantRequest, progress: Callable[[str], None] | None = None
) -> VariantResult:
    """Quantize, check the budget, report, register; raise before registering anything on failure."""
    say = progress or (lambda _msg: None)
    parent = Model.get(workspace, request.model.name, request.model.version)
    source = onnx_file_of(parent.materialize())
    fp32 = load_model(source)
    spec = input_spec(fp32)
    calibration = load_array(request.calibration, spec.name)
    check_samples(calibration, spec, source=f"Calibration data {request.calibration.name}")
    if request.labels is not None and request.eval_data is None:
        raise CalibrationDataError("--labels needs --eval: labels describe the evaluation samples.")
    eval_data = calibration
    if request.eval_data is not None:
        eval_data = load_array(request.eval_data, spec.name)
        check_samples(eval_data, spec, source=f"Evaluation data {request.eval_data.name}", minimum=1)
    labels = load_labels(request.labels, eval_data.shape[0]) if request.labels is not None else None

    say("Preparing the graph (opset, bias folding)")
    prepared = prepare(fp32)
    reader = NumpyCalibrationReader(calibration, spec)
    cache: dict[tuple[str, tuple[str, ...]], tuple[onnx.ModelProto, float]] = {}
    trial_drops: dict[tuple[str, tuple[str, ...]], float] = {}

    def options(method: str, excluded: tuple[str, ...]) -> QuantizeOptions:
        return QuantizeOptions(method, request.scales, request.per_channel, excluded)

    def trial(method: str, excluded: tuple[str, ...]) -> float:
        if (method, excluded) not in cache:
            say(f"Calibrating ({method}{', float: ' + ', '.join(excluded) if excluded else ''})")
            start = time.perf_counter()
            model = quantize(prepared, reader, options(method, excluded))
            seconds = time.perf_counter() - start
            drop = evaluate(prepared, model, spec, eval_data, labels).accuracy_drop
            cache[(method, excluded)] = (model, seconds)
            trial_drops[(method, excluded)] = drop
        return trial_drops[(method, excluded)]

    def rank(method: str) -> list[tuple[str, float]]:
        say(f"Measuring per-node sensitivity ({method})")
        base = trial(method, ())
        return [(node, base - trial(method, (node,))) for node in quantizable_nodes(prepared)]

    try:
        found = search(
            first_method=request.method,
            methods=METHODS,
            budget=request.max_accuracy_drop,
            evaluate=trial,
            rank=rank,
            max_excluded=request.max_excluded,
        )
    except AccuracyBudgetError as exc:
        exc.report = {**exc.report, "budget": request.max_accuracy_drop, "parent": f"{parent.name}:{parent.version}"}
        raise
    chosen = (found.chosen.method, found.chosen.excluded)
    int8, calibration_seconds = cache[chosen]
    say("Measuring accuracy and CPU latency")
    evaluation = evaluate(prepared, int8, spec, eval_data, labels)
    lat = latency(prepared, int8, spec, eval_data, runs=request.latency_runs)
    with tempfile.TemporaryDirectory(prefix="edgeship-fpga-") as tmp:
        out = Path(tmp) / source.name
        onnx.save(int8, str(out))
        report = build_report(
            evaluation,
            lat,
            fp32_bytes=source.stat().st_size,
            int8_bytes=out.stat().st_size,
            params=(parameter_bytes(fp32), parameter_bytes(int8)),
            settings={**options(*chosen).describe(), "budget": request.max_accuracy_drop},
            trials=[t.to_json() for t in found.trials],
            calibration_seconds=calibration_seconds,
        )
        say("Registering the variant")
        model = Model.register(
            workspace,
            out,
            request.new_name or parent.name,
            tags={"variant": VARIANT_TAG, "parent": f"{parent.name}:{parent.version}", "scales": request.scales},
            properties={REPORT_PROPERTY: json.dumps(report, sort_keys=True), "parent_digest": parent.digest},
            description=f"int8 QDQ variant of {parent.name}:{parent.version} ({_PURPOSE[request.scales]})",
            model_framework="onnx",
        )
    return VariantResult(model, report)
