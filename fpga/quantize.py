"""fp32 ONNX → int8 QDQ with onnxruntime's static quantizer, then power-of-two scales.

The settings an FPGA needs are fixed here rather than exposed: QDQ format, int8
weights *and* activations, symmetric ranges (zero points 0), and only the ops an
integer datapath runs (:data:`~edgeship.fpga.graph.QUANTIZED_OPS`) quantized;
softmax and post-processing stay in float for the host. What varies per trial —
calibration method, per-channel weights, float or pow2 scales, excluded nodes —
is a :class:`QuantizeOptions`.

``scales="float"`` is the CPU variant and differs in one more way: activations are
asymmetric uint8 (U8S8), the pairing x86 int8 kernels (VPMADDUBSW/VPDPBUSD
multiply u8 by s8) run directly; S8S8 measured 1.2-2.3x slower than U8S8 on the
benchmark's models (benchmarks/fpga/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from edgeship.errors import QuantizationError
from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.compact import compact
from edgeship.fpga.graph import QUANTIZED_OPS, InputSpec
from edgeship.fpga.pow2 import pow2_scales_of, snap_pow2

__all__ = ["METHODS", "SCALES", "QuantizeOptions", "check_runs", "quantizable_nodes", "quantize", "session"]

METHODS = ("minmax", "entropy", "percentile")
SCALES = ("pow2", "float")
_ORT_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@dataclass(frozen=True)
class QuantizeOptions:
    """One quantization trial's settings."""

    method: str = "minmax"
    scales: str = "pow2"
    per_channel: bool = False
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"Unknown calibration method {self.method!r}; use one of {', '.join(METHODS)}.")
        if self.scales not in SCALES:
            raise QuantizationError(f"Unknown scale kind {self.scales!r}; use one of {', '.join(SCALES)}.")

    def describe(self) -> dict[str, object]:
        return {
            "method": self.method,
            "scales": self.scales,
            "per_channel": self.per_channel,
            "excluded_nodes": list(self.nodes_to_exclude),
        }


def session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    """A CPU session; one thread by default so latency comparisons are not scheduling noise.

    All graph optimisations are on (fp32 and int8 alike): at this level onnxruntime
    fuses DequantizeLinear → Conv/Gemm → QuantizeLinear into integer kernels.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes the quantizer would turn int8 (the candidates for exclusion)."""
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.name]


def check_runs(model: onnx.ModelProto, spec: InputSpec, sample: np.ndarray) -> None:
    """Raise QuantizationError unless onnxruntime loads ``model`` and runs it on ``sample``."""
    try:
        session(model).run(None, {spec.name: sample})
    except Exception as exc:  # onnxruntime's Fail / InvalidGraph / RuntimeException
        raise QuantizationError(f"The int8 model does not run in onnxruntime: {exc}") from exc


def quantize(prepared: onnx.ModelProto, reader: NumpyCalibrationReader, options: QuantizeOptions) -> onnx.ModelProto:
    """The int8 QDQ model for ``prepared`` (see :func:`edgeship.fpga.graph.prepare`) under ``options``.

    With ``scales="pow2"`` every Quantize/DequantizeLinear scale is a power of two
    afterwards. The result is compacted (:func:`edgeship.fpga.compact.compact`: shared
    scalars, short tensor names) and checked to load and run in onnxruntime.
    """
    unknown = set(options.nodes_to_exclude) - {n.name for n in prepared.graph.node}
    if unknown:
        raise QuantizationError(f"Cannot exclude nodes {', '.join(sorted(unknown))}: the model has no such node.")
    fpga = options.scales == "pow2"
    reader.rewind()
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing on the root logger
    with tempfile.TemporaryDirectory(prefix="edgeship-quant-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(prepared, str(src))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
                quantize_static(
                    str(src),
                    str(dst),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                    per_channel=options.per_channel,
                    activation_type=QuantType.QInt8 if fpga else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(options.nodes_to_exclude),
                    calibrate_method=_ORT_METHODS[options.method],
                    extra_options={"ActivationSymmetric": fpga, "WeightSymmetric": True},
                )
        except QuantizationError:
            raise
        except Exception as exc:
            raise QuantizationError(f"onnxruntime's quantizer failed ({options.method}): {exc}") from exc
        finally:
            reader.rewind()
        model = onnx.load(str(dst))
    if fpga:
        model = snap_pow2(model)
        bad = [name for name, ok in pow2_scales_of(model).items() if not ok]
        if bad:
            raise QuantizationError(f"Scales {', '.join(bad)} are not powers of two after snapping.")
    model = compact(model)
    sample = reader.data[: reader.batch_size]
    check_runs(model, reader.spec, sample)
    return model
