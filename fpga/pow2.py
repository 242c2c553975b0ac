"""Power-of-two scales: the rewrite that lets integer hardware requantize with shifts.

DPUs and most FPGA overlays store a fixed-point position per tensor instead of a
float scale, so every scale must be ``2**k``. After onnxruntime's quantizer runs,
:func:`snap_pow2` rewrites the QDQ graph in place of the scales it chose:

* activation scales (QuantizeLinear on a computed tensor) go to the nearest power
  of two in the log domain; the paired DequantizeLinear shares the initializer;
* weights are re-quantized from their dequantized values at the power of two
  (the floor or ceiling of the old scale) that gives the smaller squared error,
  per tensor or per channel;
* int32 biases are re-quantized at ``s_x * s_w`` of the snapped scales, because a
  bias added in the accumulator must share the accumulator's scale exactly.

Zero points must be 0 (symmetric quantization); anything else is refused. The
functions here are pure over ``onnx`` protos: no onnxruntime, no files.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeship.errors import QuantizationError

__all__ = ["is_pow2", "nearest_pow2", "pow2_scales_of", "snap_pow2"]


def nearest_pow2(scale: np.ndarray) -> np.ndarray:
    """Each positive scale rounded to the nearest power of two in log2 (float32)."""
    return np.exp2(np.round(np.log2(scale.astype(np.float64)))).astype(np.float32)


def is_pow2(scale: np.ndarray) -> bool:
    """True when every entry is exactly ``2**k`` for an integer ``k``."""
    mantissa, _ = np.frexp(np.asarray(scale, dtype=np.float64))
    return bool(np.all(mantissa == 0.5))


def _broadcast(scale: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if scale.ndim == 0 or scale.size == 1:
        return scale.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = scale.size
    return scale.reshape(shape)


def _best_weight_scale(weights: np.ndarray, old: np.ndarray, axis: int, qmin: int, qmax: int) -> np.ndarray:
    """Per entry of ``old``: the floor or ceiling power of two with the smaller reconstruction error."""
    low = np.exp2(np.floor(np.log2(old.astype(np.float64)))).astype(np.float32)
    high = (low * 2).astype(np.float32)
    reduce_axes = tuple(i for i in range(weights.ndim) if old.size == 1 or i != axis % weights.ndim)

    def err(s: np.ndarray) -> np.ndarray:
        b = _broadcast(s, weights.ndim, axis)
        q = np.clip(np.round(weights / b), qmin, qmax)
        return np.sum((q * b - weights) ** 2, axis=reduce_axes).reshape(old.shape)

    return np.where(err(low) <= err(high), low, high).astype(np.float32)


def _zero_point_is_zero(inits: dict[str, onnx.TensorProto], node: onnx.NodeProto) -> None:
    if len(node.input) > 2 and node.input[2] and np.any(numpy_helper.to_array(inits[node.input[2]]) != 0):
        raise QuantizationError(
            f"Node {node.name!r} has a non-zero zero point; power-of-two scales need symmetric quantization."
        )


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def snap_pow2(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the QDQ ``model`` with every scale a power of two (see module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    q_nodes = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in q_nodes:
        _zero_point_is_zero(inits, node)
    dq_of = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    activation_scales = {n.input[1] for n in q_nodes if n.input[0] not in inits}
    for name in sorted(activation_scales):
        put(name, nearest_pow2(arr(name)))
    weight_scales: dict[str, np.ndarray] = {}
    for node in q_nodes:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = arr(node.input[0])
        if q.dtype != np.int8:
            continue
        old = arr(node.input[1])
        axis = _axis(node)
        weights = q.astype(np.float32) * _broadcast(old, q.ndim, axis)
        new = _best_weight_scale(weights, old, axis, -128, 127)
        put(node.input[0], np.clip(np.round(weights / _broadcast(new, q.ndim, axis)), -128, 127).astype(np.int8))
        put(node.input[1], new)
        weight_scales[node.output[0]] = new
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in dq_of:
            continue
        bias_dq = dq_of[node.input[2]]
        x_dq, w_dq = dq_of.get(node.input[0]), dq_of.get(node.input[1])
        if bias_dq.input[0] not in inits or x_dq is None or w_dq is None or node.input[1] not in weight_scales:
            continue
        old = arr(bias_dq.input[1])
        bias = arr(bias_dq.input[0]).astype(np.float64) * old.astype(np.float64)
        new = (arr(x_dq.input[1]) * weight_scales[node.input[1]]).astype(np.float32).reshape(old.shape)
        limit = np.iinfo(np.int32)
        put(bias_dq.input[0], np.clip(np.round(bias / new), limit.min, limit.max).astype(np.int32))
        put(bias_dq.input[1], new)
    return out


def pow2_scales_of(model: onnx.ModelProto) -> dict[str, bool]:
    """For each Quantize/DequantizeLinear scale initializer: whether it is a power of two."""
    inits = {i.name: i for i in model.graph.initializer}
    return {
        n.input[1]: is_pow2(numpy_helper.to_array(inits[n.input[1]]))
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits
    }
