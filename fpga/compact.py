"""Compaction: the int8 file without the bytes that are not weights.

onnxruntime's quantizer writes, per quantized tensor, a scale and a zero-point
initializer and a Quantize/DequantizeLinear pair, each named after the tensor
(``/features/features.0/Conv_output_0_zero_point``). On models of a few thousand
parameters those names, the duplicated scalars and the shape annotations weigh as
much as the int8 weights. :func:`compact` rewrites the graph so that only what a
runtime reads is left:

* identical initializers are stored once (every zero point is the same int8 0;
  power-of-two scales repeat across tensors);
* value_info and doc strings are dropped (onnxruntime infers shapes at load);
* tensors that are neither graph inputs nor outputs get short names (``t0``,
  ``t1``, ...); nodes lose their names except the compute nodes (Conv, Gemm,
  MatMul), whose names the accuracy report and the integer reference refer to.

The rewrite is exact: the compacted model computes bit-identical outputs, and
it is still a QDQ graph with the same scales (pure over ``onnx`` protos).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import onnx

__all__ = ["KEEP_NAMES", "compact"]

KEEP_NAMES = frozenset({"Conv", "Gemm", "MatMul"})


def _dedupe_initializers(graph: onnx.GraphProto, public: set[str]) -> dict[str, str]:
    """Drop initializers equal to an earlier one (graph inputs/outputs excepted); return old name → kept name."""
    seen: dict[bytes, str] = {}
    alias: dict[str, str] = {}
    for init in list(graph.initializer):
        if init.name in public:
            continue
        probe = onnx.TensorProto()
        probe.CopyFrom(init)
        probe.name = ""
        key = probe.SerializeToString(deterministic=True)
        if key in seen:
            alias[init.name] = seen[key]
            graph.initializer.remove(init)
        else:
            seen[key] = init.name
    return alias


def _short_names(taken: set[str]) -> Iterator[str]:
    """``t0``, ``t1``, ... ``tz``, ``t10``, ... (base 36), skipping names in ``taken``."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    for index in itertools.count():
        out = ""
        while True:
            index, rest = divmod(index, 36)
            out = digits[rest] + out
            if index == 0:
                break
        if "t" + out not in taken:
            yield "t" + out


def compact(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` holding the same function in fewer bytes (see module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    out.doc_string = ""
    graph.doc_string = ""
    del graph.value_info[:]
    public = {v.name for v in [*graph.input, *graph.output]}
    alias = _dedupe_initializers(graph, public)
    names: dict[str, str] = {}
    fresh = _short_names(public)

    def rename(name: str) -> str:
        name = alias.get(name, name)
        if not name or name in public:
            return name
        if name not in names:
            names[name] = next(fresh)
        return names[name]

    for node in graph.node:
        node.doc_string = ""
        if node.op_type not in KEEP_NAMES:
            node.name = ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in graph.initializer:
        init.name = rename(init.name)
        init.doc_string = ""
    for value in [*graph.input, *graph.output]:
        value.doc_string = ""
    onnx.checker.check_model(out)
    return out
