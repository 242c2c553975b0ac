"""Quantizing the three real models: pow2 scales, zero points 0, onnxruntime still runs them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Case
from onnx import numpy_helper

from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.graph import input_spec, load_model, prepare
from edgeship.fpga.pow2 import is_pow2, nearest_pow2, pow2_scales_of
from edgeship.fpga.quantize import QuantizeOptions, quantize
from edgeship.fpga.report import evaluate


@pytest.mark.parametrize("per_channel", [False, True])
def test_every_scale_is_a_power_of_two_and_zero_points_are_zero(case: Case, per_channel: bool) -> None:
    fp32 = prepare(load_model(case.path))
    spec = input_spec(fp32)
    int8 = quantize(fp32, NumpyCalibrationReader(case.calibration, spec), QuantizeOptions(per_channel=per_channel))
    scales = pow2_scales_of(int8)
    assert scales and all(scales.values())
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    for node in int8.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            assert not np.any(inits[node.input[2]])
    ev = evaluate(fp32, int8, spec, case.eval_data, case.labels)
    assert ev.top1_agreement >= 0.97, (case.name, ev)


def test_float_scales_are_left_as_calibrated(mlp_case: Case) -> None:
    fp32 = prepare(load_model(mlp_case.path))
    int8 = quantize(
        fp32, NumpyCalibrationReader(mlp_case.calibration, input_spec(fp32)), QuantizeOptions(scales="float")
    )
    assert not all(pow2_scales_of(int8).values())


def test_cpu_variant_has_uint8_activations_and_int8_weights(cnn_case: Case) -> None:
    fp32 = prepare(load_model(cnn_case.path))
    int8 = quantize(
        fp32,
        NumpyCalibrationReader(cnn_case.calibration, input_spec(fp32)),
        QuantizeOptions(scales="float", per_channel=True),
    )
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    activations = {inits[n.input[2]].dtype for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    dequantized = [n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    weights = {inits[n.input[0]].dtype for n in dequantized}
    assert activations == {np.dtype(np.uint8)}
    assert np.dtype(np.int8) in weights


def test_prepare_keeps_the_function_and_folds_biases(cntk_case: Case) -> None:
    from edgeship.fpga.quantize import session

    raw = load_model(cntk_case.path)
    fp32 = prepare(raw)
    assert [n.op_type for n in fp32.graph.node].count("Add") == 0
    feed = {"Input3": cntk_case.eval_data[:1]}
    np.testing.assert_allclose(session(raw).run(None, feed)[0], session(fp32).run(None, feed)[0], rtol=1e-5, atol=1e-4)


def test_nearest_pow2_rounds_in_the_log_domain() -> None:
    got = nearest_pow2(np.array([0.3, 0.7, 1.0, 5.0, 6.0], dtype=np.float32))
    assert got.tolist() == [0.25, 0.5, 1.0, 4.0, 8.0]
    assert is_pow2(got) and not is_pow2(np.array([0.3]))
