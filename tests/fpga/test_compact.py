"""Compaction keeps the int8 function bit for bit and removes the bytes that are not weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from conftest import Case
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.compact import KEEP_NAMES, compact
from edgeship.fpga.graph import QUANTIZED_OPS, input_spec, load_model, prepare
from edgeship.fpga.pow2 import snap_pow2
from edgeship.fpga.quantize import session


def _ort_qdq(fp32: onnx.ModelProto, case: Case) -> onnx.ModelProto:
    """onnxruntime's own QDQ output, before edgeship compacts it."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
        onnx.save(fp32, str(src))
        quantize_static(
            str(src),
            str(dst),
            NumpyCalibrationReader(case.calibration, input_spec(fp32)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        return snap_pow2(onnx.load(str(dst)))


def test_compacted_model_computes_the_same_bits_in_fewer_bytes(case: Case) -> None:
    fp32 = prepare(load_model(case.path))
    spec = input_spec(fp32)
    full = _ort_qdq(fp32, case)
    small = compact(full)
    feed = {spec.name: case.eval_data[:1] if spec.shape[0] == 1 else case.eval_data[:50]}
    for a, b in zip(session(full).run(None, feed), session(small).run(None, feed), strict=True):
        assert np.array_equal(a, b)
    assert len(small.SerializeToString()) < 0.75 * len(full.SerializeToString())
    assert case.path.stat().st_size / len(small.SerializeToString()) > 2.8, case.name


def test_identical_scalars_are_stored_once_and_compute_nodes_keep_their_names(cnn_case: Case) -> None:
    fp32 = prepare(load_model(cnn_case.path))
    small = compact(_ort_qdq(fp32, cnn_case))
    zero_points = [i for i in small.graph.initializer if i.data_type == onnx.TensorProto.INT8 and not i.dims]
    assert len(zero_points) == 1
    named = {n.name for n in small.graph.node if n.name}
    assert named == {n.name for n in fp32.graph.node if n.op_type in KEEP_NAMES}
    assert not small.graph.value_info
    assert [v.name for v in small.graph.input] == [v.name for v in fp32.graph.input]
    assert [v.name for v in small.graph.output] == [v.name for v in fp32.graph.output]


def test_short_names_do_not_collide_with_graph_inputs_and_outputs() -> None:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["t0", "w"], ["mid"]), helper.make_node("Relu", ["mid"], ["t1"])],
        "g",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("t1", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    small = compact(model)
    feed = {"t0": np.array([[1.0, -1.0]], dtype=np.float32)}
    assert np.array_equal(session(model).run(None, feed)[0], session(small).run(None, feed)[0])
    names = [*(i.name for i in small.graph.initializer), *(o for n in small.graph.node for o in n.output)]
    assert sorted(names) == ["t1", "t2", "t3"]  # w and mid got fresh names; t0 and t1 stay the graph's
