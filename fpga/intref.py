"""Integer reference: what an int8 datapath computes for a power-of-two QDQ graph.

Evidence that integer hardware computes the same thing as onnxruntime: every
quantized tensor of the graph (each QuantizeLinear output) is recomputed here
with integer arithmetic only —

* int8 activations and weights, products summed in int32 accumulators (checked
  to fit), the bias added as int32 at scale ``s_x * s_w``;
* requantization from the accumulator scale to the output scale, a power-of-two
  ratio, by an arithmetic shift with round-half-to-even (onnxruntime's
  requantization multiplies in float and rounds to nearest even, which for a
  ``2**-k`` multiplier is the same shift while the accumulator fits float32's
  24-bit mantissa; beyond that the two may differ by one LSB);
* Relu as ``max(0, q)``, MaxPool as a max over int8, Reshape/Flatten as views.

Only the graph input is quantized from float (the host's job at the boundary).
Float post-processing (Softmax, ArgMax, ...) is outside the integer datapath and
ends the reference. Supported: Conv (group 1), Gemm (alpha = beta = 1), MatMul,
Relu, MaxPool, Reshape, Flatten; anything else inside the quantized region is a
QuantizationError naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeship.errors import QuantizationError
from edgeship.fpga.pow2 import is_pow2

__all__ = [
    "IntTensor",
    "integer_outputs",
    "max_lsb_difference",
    "onnxruntime_int8_outputs",
    "requantize",
    "shift_round",
]

_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class IntTensor:
    """Integer values and their scale: scalar, or one scale per channel (axis 1)."""

    values: np.ndarray  # int64 holding int8 or int32 values
    scale: np.ndarray

    def channel_scale(self) -> np.ndarray:
        if self.scale.size == 1:
            return self.scale.reshape(())
        shape = [1] * self.values.ndim
        shape[1] = self.scale.size
        return self.scale.reshape(shape)


def shift_round(values: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``values / 2**shift`` rounded half to even, by shifts and masks only (``shift`` ≥ 0)."""
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), values.shape)
    floor = np.right_shift(values, shift)
    remainder = values - np.left_shift(floor, shift)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    up = (shift > 0) & ((remainder > half) | ((remainder == half) & (np.bitwise_and(floor, 1) == 1)))
    return floor + up.astype(np.int64)


def _exponent(scale: np.ndarray) -> np.ndarray:
    _, exp = np.frexp(scale.astype(np.float64))
    return (exp - 1).astype(np.int64)  # scale == 2**(exp-1) for powers of two


def requantize(tensor: IntTensor, out_scale: np.ndarray) -> np.ndarray:
    """int8 values of ``tensor`` at ``out_scale``: a left or rounding right shift, then saturation."""
    delta = _exponent(tensor.channel_scale()) - _exponent(np.asarray(out_scale).reshape(()))
    delta = np.broadcast_to(delta, tensor.values.shape)
    left = np.left_shift(tensor.values, np.maximum(delta, 0))
    shifted = np.where(delta >= 0, left, shift_round(tensor.values, np.maximum(-delta, 0)))
    return np.clip(shifted, -128, 127)


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(attrs: dict[str, object], spatial: tuple[int, ...], kernel: list[int], strides: list[int]) -> list[int]:
    auto = attrs.get("auto_pad", b"NOTSET")
    if auto in (b"SAME_UPPER", b"SAME_LOWER"):
        begin, end = [], []
        for size, k, s in zip(spatial, kernel, strides, strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            small = total // 2
            begin.append(small if auto == b"SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin + end
    pads = attrs.get("pads")
    return list(pads) if isinstance(pads, list) else [0] * (2 * len(spatial))


def _windows(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int], fill: int) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] patches of an NCHW tensor (2-D only)."""
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))
    return win[:, :, :: strides[0], :: strides[1]]


def _conv(node: onnx.NodeProto, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    attrs = _attrs(node)
    if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])) or x.ndim != 4:  # type: ignore[attr-defined]
        raise QuantizationError(f"Node {node.name!r}: the integer reference supports 2-D Conv with group 1 only.")
    kernel = list(w.shape[2:])
    strides = list(attrs.get("strides", [1, 1]))  # type: ignore[call-overload]
    win = _windows(x, kernel, strides, _pads(attrs, x.shape[2:], kernel, strides), 0)
    return np.einsum("nchwij,ocij->nohw", win, w, dtype=np.int64)


def _maxpool(node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    attrs = _attrs(node)
    kernel = list(attrs["kernel_shape"])  # type: ignore[call-overload]
    strides = list(attrs.get("strides", [1] * len(kernel)))  # type: ignore[call-overload]
    win = _windows(x, kernel, strides, _pads(attrs, x.shape[2:], kernel, strides), -128)
    return win.max(axis=(-2, -1))


def _accumulate(node: onnx.NodeProto, x: IntTensor, w: IntTensor, b: IntTensor | None) -> IntTensor:
    if node.op_type == "Conv":
        acc = _conv(node, x.values, w.values)
    else:
        attrs = _attrs(node)
        if node.op_type == "Gemm" and (
            attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
        ):
            raise QuantizationError(
                f"Node {node.name!r}: the integer reference needs Gemm with alpha=beta=1, no transA."
            )
        weights = w.values.T if attrs.get("transB", 0) else w.values
        acc = np.matmul(x.values, weights)
    scale = (x.scale.reshape(-1) * w.scale.reshape(-1)).astype(np.float32)
    out = IntTensor(acc, scale)
    if b is not None:
        bias = b.values.reshape([1, -1] + [1] * (acc.ndim - 2))
        out = IntTensor(acc + bias, scale)
    if out.values.min(initial=0) < _INT32.min or out.values.max(initial=0) > _INT32.max:
        raise QuantizationError(f"Node {node.name!r}: the int32 accumulator overflows.")
    return out


def integer_outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The int8 value of every QuantizeLinear output reachable through the integer datapath."""
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    floats: dict[str, np.ndarray] = dict(feed)
    ints: dict[str, IntTensor] = {}
    results: dict[str, np.ndarray] = {}
    for node in graph.node:
        ins, out = list(node.input), node.output[0]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = inits[ins[1]].astype(np.float32)
            if not is_pow2(scale):
                raise QuantizationError(
                    f"Node {node.name!r} has a scale that is not a power of two; use --scales pow2."
                )
        if node.op_type == "DequantizeLinear":
            if ins[0] in inits:
                ints[out] = IntTensor(inits[ins[0]].astype(np.int64), scale)
            elif ins[0] in ints:
                ints[out] = ints[ins[0]]
        elif node.op_type == "QuantizeLinear":
            if ins[0] in floats:  # the boundary: the host quantizes the float input
                q = np.clip(np.round(floats[ins[0]].astype(np.float32) / scale), -128, 127).astype(np.int64)
            elif ins[0] in ints:
                q = requantize(ints[ins[0]], scale)
            else:
                continue
            ints[out] = IntTensor(q, scale)
            results[out] = q.astype(np.int8)
        elif node.op_type in ("Cast", "Identity") and ins[0] in floats and ins[0] not in ints:
            floats[out] = floats[ins[0]]
        elif node.op_type in ("Conv", "Gemm", "MatMul") and ins[0] in ints:
            bias = ints.get(ins[2]) if len(ins) > 2 else None
            if ins[1] not in ints or (len(ins) > 2 and bias is None):
                raise QuantizationError(f"Node {node.name!r} has a weight or bias that is not quantized.")
            ints[out] = _accumulate(node, ints[ins[0]], ints[ins[1]], bias)
        elif node.op_type == "Relu" and ins[0] in ints:
            src = ints[ins[0]]
            ints[out] = IntTensor(np.maximum(src.values, 0), src.scale)
        elif node.op_type == "MaxPool" and ins[0] in ints:
            src = ints[ins[0]]
            ints[out] = IntTensor(_maxpool(node, src.values), src.scale)
        elif node.op_type in ("Reshape", "Flatten") and ins[0] in ints:
            src = ints[ins[0]]
            if node.op_type == "Reshape":
                shape = [d if d != 0 else src.values.shape[i] for i, d in enumerate(inits[ins[1]].tolist())]
            else:
                axis = int(_attrs(node).get("axis", 1))  # type: ignore[call-overload]
                shape = [int(np.prod(src.values.shape[:axis])), -1]
            ints[out] = IntTensor(src.values.reshape(shape), src.scale)
        elif any(name in ints for name in ins) and any(
            c.op_type == "QuantizeLinear" and c.input[0] == out for c in graph.node
        ):
            raise QuantizationError(
                f"Node {node.name!r} ({node.op_type}) is inside the int8 region but the integer reference "
                "does not support it."
            )
    return results


def onnxruntime_int8_outputs(
    model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    """The int8 tensors ``names`` as onnxruntime computes them (exposed as extra graph outputs)."""
    from edgeship.fpga.quantize import session  # onnxruntime stays out of the pure reference

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT8, None))
    values = session(probe).run(names, feed)
    return dict(zip(names, (np.asarray(v) for v in values), strict=True))


def max_lsb_difference(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """Per quantized tensor: the largest |reference - onnxruntime| in int8 steps (LSBs)."""
    ref = integer_outputs(model, feed)
    ort_values = onnxruntime_int8_outputs(model, feed, list(ref))
    return {name: int(np.abs(ref[name].astype(np.int32) - ort_values[name].astype(np.int32)).max()) for name in ref}
