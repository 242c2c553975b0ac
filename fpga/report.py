"""The accuracy report: what an int8 variant costs against its fp32 parent.

Top-1 agreement and (with labels) accuracy compare argmax of the score output
(the first float output: logits or probabilities); max/mean absolute difference
are over that output. Latency compares single-threaded onnxruntime CPU sessions
(graph optimisation ORT_ENABLE_ALL for both, so QDQ pairs are fused into integer
kernels), so the ratio reflects kernels rather than thread scheduling. fp32 and
int8 runs are interleaved sample by sample (order alternating) and the ratio is
the median of the per-sample ratios: load from other processes hits both sides
of a sample alike and cancels. Batch 32 runs on a copy with a symbolic batch
dimension, and is ``None`` (N/A) when the graph cannot take one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
from rich.table import Table

from edgeship.fpga.graph import InputSpec, score_output, with_dynamic_batch
from edgeship.fpga.quantize import session

__all__ = [
    "Evaluation",
    "LatencyReport",
    "build_report",
    "evaluate",
    "interleaved_ms",
    "latency",
    "parameter_bytes",
    "report_table",
]

LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class Evaluation:
    """fp32 vs int8 on one evaluation set; accuracies are fractions, ``None`` without labels."""

    samples: int
    top1_agreement: float
    fp32_accuracy: float | None
    int8_accuracy: float | None
    max_abs_diff: float
    mean_abs_diff: float

    @property
    def accuracy_drop(self) -> float:
        """What the budget bounds: accuracy lost with labels, else disagreement with fp32."""
        if self.fp32_accuracy is not None and self.int8_accuracy is not None:
            return self.fp32_accuracy - self.int8_accuracy
        return 1.0 - self.top1_agreement


@dataclass(frozen=True)
class LatencyReport:
    """Median CPU milliseconds per batch and the median int8/fp32 ratio; ``None`` where a batch cannot run."""

    fp32_ms: dict[int, float | None]
    int8_ms: dict[int, float | None]
    ratios: dict[int, float | None]

    def ratio(self, batch: int) -> float | None:
        return self.ratios.get(batch)


def _scores(model: onnx.ModelProto, spec: InputSpec, data: np.ndarray) -> np.ndarray:
    sess = session(model)
    name = score_output(model)
    fixed = spec.shape[0]
    if fixed is None:
        return np.asarray(sess.run([name], {spec.name: data})[0])
    parts = [sess.run([name], {spec.name: data[i : i + fixed]})[0] for i in range(0, data.shape[0] - fixed + 1, fixed)]
    return np.concatenate([np.asarray(p) for p in parts])


def evaluate(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, spec: InputSpec, data: np.ndarray, labels: np.ndarray | None
) -> Evaluation:
    """Compare both models on ``data`` (and ``labels`` when given)."""
    a = _scores(fp32, spec, data)
    b = _scores(int8, spec, data)
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    top_a, top_b = a2.argmax(axis=1), b2.argmax(axis=1)
    lab = labels[: a.shape[0]] if labels is not None else None
    diff = np.abs(a2.astype(np.float64) - b2.astype(np.float64))
    return Evaluation(
        samples=int(a.shape[0]),
        top1_agreement=float(np.mean(top_a == top_b)),
        fp32_accuracy=None if lab is None else float(np.mean(top_a == lab)),
        int8_accuracy=None if lab is None else float(np.mean(top_b == lab)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
    )


SAMPLE_SECONDS = 0.002  # each timing sample repeats a run until it lasts about this long


def _per_run_seconds(sess: ort.InferenceSession, feed: dict[str, np.ndarray], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        sess.run(None, feed)
    return (time.perf_counter() - start) / repeats


def interleaved_ms(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, spec: InputSpec, batch: np.ndarray, samples: int
) -> tuple[float, float, float]:
    """(fp32 ms, int8 ms, int8/fp32): medians over ``samples`` interleaved timing samples."""
    a, b = session(fp32), session(int8)
    feed = {spec.name: batch}
    for sess in (a, b):  # warm-up: first runs allocate
        sess.run(None, feed)
    once = max(_per_run_seconds(a, feed, 1), _per_run_seconds(b, feed, 1), 1e-6)
    repeats = max(1, int(SAMPLE_SECONDS / once))
    fp_times, q_times, ratios = [], [], []
    for i in range(samples):
        if i % 2:
            q = _per_run_seconds(b, feed, repeats)
            fp = _per_run_seconds(a, feed, repeats)
        else:
            fp = _per_run_seconds(a, feed, repeats)
            q = _per_run_seconds(b, feed, repeats)
        fp_times.append(fp)
        q_times.append(q)
        ratios.append(q / fp)
    return float(np.median(fp_times) * 1000), float(np.median(q_times) * 1000), float(np.median(ratios))


def _batchable(model: onnx.ModelProto, spec: InputSpec, sample: np.ndarray) -> onnx.ModelProto | None:
    if spec.shape and spec.shape[0] is None:
        return model
    dynamic = with_dynamic_batch(model)
    try:
        session(dynamic).run(None, {spec.name: np.concatenate([sample[:1]] * 2)})
    except Exception:  # the graph bakes batch 1 in somewhere we cannot rewrite
        return None
    return dynamic


def latency(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, spec: InputSpec, data: np.ndarray, runs: int = 50
) -> LatencyReport:
    """Both models at batch 1 and 32 (rows of ``data`` repeated as needed), ``runs`` interleaved samples each."""
    fp_ms: dict[int, float | None] = {}
    q_ms: dict[int, float | None] = {}
    ratios: dict[int, float | None] = {}
    for size in LATENCY_BATCHES:
        batch = np.resize(data, (size, *data.shape[1:])).astype(data.dtype)
        pair = [model if spec.shape[0] == size else _batchable(model, spec, data) for model in (fp32, int8)]
        fp_ms[size] = q_ms[size] = ratios[size] = None
        if pair[0] is not None and pair[1] is not None:
            fp_ms[size], q_ms[size], ratios[size] = interleaved_ms(pair[0], pair[1], spec, batch, runs)
    return LatencyReport(fp_ms, q_ms, ratios)


def parameter_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers: the weights a device stores, without graph overhead."""
    return sum(len(i.raw_data) or len(i.SerializeToString()) for i in model.graph.initializer)


def build_report(
    evaluation: Evaluation,
    lat: LatencyReport,
    fp32_bytes: int,
    int8_bytes: int,
    params: tuple[int, int],
    settings: dict[str, object],
    trials: list[dict[str, object]],
    calibration_seconds: float,
) -> dict[str, object]:
    """The JSON-ready report stored in the variant's properties."""
    return {
        "evaluation": {**asdict(evaluation), "accuracy_drop": evaluation.accuracy_drop},
        "size": {
            "fp32_bytes": fp32_bytes,
            "int8_bytes": int8_bytes,
            "ratio": fp32_bytes / max(int8_bytes, 1),
            "fp32_param_bytes": params[0],
            "int8_param_bytes": params[1],
            "param_ratio": params[0] / max(params[1], 1),
        },
        "latency_ms": {
            f"batch{b}": {"fp32": lat.fp32_ms.get(b), "int8": lat.int8_ms.get(b), "ratio": lat.ratio(b)}
            for b in LATENCY_BATCHES
        },
        "settings": settings,
        "trials": trials,
        "calibration_seconds": calibration_seconds,
    }


def _fmt(value: object, pct: bool = False) -> str:
    if value is None:
        return "N/A"
    if isinstance(value, float):
        return f"{value * 100:.2f} %" if pct else f"{value:.4g}"
    return str(value)


def report_table(report: dict[str, object]) -> Table:
    """The report as a two-column rich table."""
    ev: dict[str, object] = report["evaluation"]  # type: ignore[assignment]
    size: dict[str, object] = report["size"]  # type: ignore[assignment]
    lat: dict[str, dict[str, object]] = report["latency_ms"]  # type: ignore[assignment]
    table = Table("metric", "value", title="int8 variant vs fp32")
    table.add_row("samples evaluated", _fmt(ev["samples"]))
    table.add_row("top-1 agreement", _fmt(ev["top1_agreement"], pct=True))
    table.add_row("fp32 accuracy", _fmt(ev["fp32_accuracy"], pct=True))
    table.add_row("int8 accuracy", _fmt(ev["int8_accuracy"], pct=True))
    table.add_row("accuracy drop (budgeted)", _fmt(ev["accuracy_drop"], pct=True))
    table.add_row("max / mean |diff|", f"{_fmt(ev['max_abs_diff'])} / {_fmt(ev['mean_abs_diff'])}")
    table.add_row("file size fp32 → int8", f"{size['fp32_bytes']} → {size['int8_bytes']} B ({_fmt(size['ratio'])}x)")
    table.add_row(
        "weights fp32 → int8",
        f"{size['fp32_param_bytes']} → {size['int8_param_bytes']} B ({_fmt(size['param_ratio'])}x)",
    )
    for key, row in lat.items():
        table.add_row(
            f"CPU latency {key} (int8/fp32)", f"{_fmt(row['int8'])} / {_fmt(row['fp32'])} ms = {_fmt(row['ratio'])}"
        )
    table.add_row("settings", str(report["settings"]))
    return table
