"""Loading an fp32 ONNX model and shaping it for integer hardware before quantization.

Integer accelerators compute ``Conv``/``Gemm`` with the bias added in the int32
accumulator. Exporters often write the bias as a separate ``Add`` (skl2onnx's
``MatMul`` + ``Add``, CNTK's ``Conv`` + ``Add``), which onnxruntime would quantize
as an int8 add of two tensors at different scales. :func:`prepare` folds those
into ``Gemm``/``Conv`` bias inputs, folds weight ``Reshape``s of constants, and
raises the opset to 13 (what the QDQ quantizer and per-channel scales need). The
rewrite is exact: the prepared fp32 model computes the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from edgeship.errors import UnsupportedModelError

__all__ = [
    "MIN_OPSET",
    "QUANTIZED_OPS",
    "SUPPORTED_OPS",
    "InputSpec",
    "input_spec",
    "load_model",
    "prepare",
    "score_output",
    "with_dynamic_batch",
]

MIN_OPSET = 13
# Ops the int8 graph computes in integers (what an FPGA overlay runs).
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "MaxPool", "Reshape", "Flatten")
# Ops allowed around them, left in float (post-processing a host CPU runs).
_FLOAT_OPS = (
    "Add",
    "Softmax",
    "Cast",
    "Identity",
    "ArgMax",
    "ArrayFeatureExtractor",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Constant",
    "Shape",
    "Gather",
    "Concat",
    "Dropout",
    "ZipMap",
)
SUPPORTED_OPS = frozenset(QUANTIZED_OPS + _FLOAT_OPS)

_NP_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT8: "int8",
}


@dataclass(frozen=True)
class InputSpec:
    """The one graph input: name, dtype and shape (``None`` for a symbolic dimension)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def load_model(path: Path) -> onnx.ModelProto:
    """The ONNX model at ``path``; anything else is an UnsupportedModelError naming the file."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError ...
        raise UnsupportedModelError(
            f"{path.name} is not a valid ONNX model ({type(exc).__name__}); register an fp32 .onnx file."
        ) from exc
    if not model.graph.node:
        raise UnsupportedModelError(f"{path.name} is not a valid ONNX model: its graph has no nodes.")
    return model


def input_spec(model: onnx.ModelProto) -> InputSpec:
    """The model's single non-initializer input; multi-input models are not supported."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UnsupportedModelError(f"The model has {len(inputs)} inputs ({names}); int8 variants need exactly one.")
    tensor = inputs[0].type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return InputSpec(inputs[0].name, _NP_TYPES.get(tensor.elem_type, str(tensor.elem_type)), dims)


def score_output(model: onnx.ModelProto) -> str:
    """The output compared between fp32 and int8: the first float output (scores or probabilities)."""
    for out in model.graph.output:
        if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            return out.name
    raise UnsupportedModelError("The model has no float32 output to compare; int8 variants need one.")


def _check_ops(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if node.op_type not in SUPPORTED_OPS:
            raise UnsupportedModelError(
                f"Node {node.name or node.output[0]!r} is a {node.domain or 'ai.onnx'}.{node.op_type}, which the "
                f"int8 path does not support (supported: {', '.join(sorted(SUPPORTED_OPS))})."
            )


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    uses: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def _fold_constant_reshapes(graph: onnx.GraphProto) -> None:
    inits = {i.name: i for i in graph.initializer}
    for node in list(graph.node):
        if node.op_type == "Reshape" and all(n in inits for n in node.input[:2]):
            data = numpy_helper.to_array(inits[node.input[0]])
            shape = numpy_helper.to_array(inits[node.input[1]])
            graph.initializer.append(numpy_helper.from_array(data.reshape(shape), node.output[0]))
            graph.node.remove(node)


def _fuse_bias(graph: onnx.GraphProto, ranks: dict[str, int]) -> None:
    """``MatMul(x, W) + b`` → ``Gemm(x, W, b)`` (x of rank 2); ``Conv(x, W) + B[C,1,1]`` → ``Conv(x, W, B)``."""
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    uses = _consumers(graph)
    for node in list(graph.node):
        users = uses.get(node.output[0], [])
        if node.op_type not in ("MatMul", "Conv") or len(users) != 1 or node.output[0] in outputs:
            continue
        add = users[0]
        if add.op_type != "Add" or node.input[1] not in inits:
            continue
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        if other not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        bias = numpy_helper.to_array(inits[other])
        channels = weight.shape[1] if node.op_type == "MatMul" else weight.shape[0]
        if bias.size != channels or (node.op_type == "Conv" and len(node.input) > 2):
            continue
        if node.op_type == "MatMul" and (weight.ndim != 2 or ranks.get(node.input[0]) != 2):
            continue
        bias_name = f"{other}_fused_bias"
        graph.initializer.append(numpy_helper.from_array(bias.reshape(channels).astype(np.float32), bias_name))
        if node.op_type == "MatMul":
            fused = helper.make_node("Gemm", [node.input[0], node.input[1], bias_name], [add.output[0]], name=node.name)
        else:
            fused = helper.make_node("Conv", [*node.input[:2], bias_name], [add.output[0]], name=node.name)
            fused.attribute.extend(node.attribute)
        graph.node.insert(list(graph.node).index(node), fused)
        graph.node.remove(node)
        graph.node.remove(add)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    for inp in list(graph.input):
        if inp.name not in used and any(i.name == inp.name for i in graph.initializer):
            graph.input.remove(inp)


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` at opset ≥ 13 with biases folded into Gemm/Conv; same function."""
    _check_ops(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if opset < MIN_OPSET:
        try:
            out = version_converter.convert_version(out, MIN_OPSET)
        except Exception as exc:
            raise UnsupportedModelError(f"Cannot upgrade the model from opset {opset} to {MIN_OPSET}: {exc}") from exc
    # CNTK (IR 3) lists initializers as graph inputs too; from IR 4 they need not be, and inputs
    # shadowed by initializers would stop onnxruntime folding them as constants.
    out.ir_version = max(out.ir_version, 7)
    inits = {i.name for i in out.graph.initializer}
    for inp in list(out.graph.input):
        if inp.name in inits:
            out.graph.input.remove(inp)
    _fold_constant_reshapes(out.graph)
    inferred = onnx.shape_inference.infer_shapes(out).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.input, *inferred.value_info]}
    _fuse_bias(out.graph, ranks)
    _drop_unused_initializers(out.graph)
    del out.graph.value_info[:]
    out = onnx.shape_inference.infer_shapes(out)
    onnx.checker.check_model(out)
    return out


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose input and outputs have a symbolic batch dimension (for batch-32 latency).

    A fixed ``Reshape`` target whose first entry is the old batch size 1 becomes -1,
    which keeps the reshape exact for every batch. The caller checks the copy runs.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in [*out.graph.input, *out.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    inits = {i.name: i for i in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.size and shape[0] == 1 and -1 not in shape:
                shape[0] = -1
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del out.graph.value_info[:]
    return out
