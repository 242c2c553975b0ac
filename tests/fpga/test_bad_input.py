"""Every bad input fails before quantizing, naming the tensor or node and what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Case
from onnx import TensorProto, helper

from edgeship.errors import CalibrationDataError, UnsupportedModelError
from edgeship.fpga.calibration import check_samples, load_array, load_labels
from edgeship.fpga.graph import input_spec, load_model, prepare


def test_a_non_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is a pickle, honest")
    with pytest.raises(UnsupportedModelError, match=r"model\.onnx is not a valid ONNX model"):
        load_model(path)


def test_an_unsupported_op_is_named() -> None:
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="encoder_lstm", hidden_size=4)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "w", "r")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(UnsupportedModelError, match=r"Node 'encoder_lstm' is a ai.onnx.LSTM"):
        prepare(helper.make_model(graph))


def test_shape_mismatch_names_the_tensor_and_both_shapes(cnn_case: Case) -> None:
    spec = input_spec(load_model(cnn_case.path))
    with pytest.raises(
        CalibrationDataError, match=r"is float32\[64,64\] but model input 'input' is float32\[N,1,8,8\]"
    ):
        check_samples(cnn_case.calibration.reshape(64, 64), spec, source="cal.npy")


def test_dtype_mismatch_names_the_tensor(cnn_case: Case) -> None:
    spec = input_spec(load_model(cnn_case.path))
    with pytest.raises(CalibrationDataError, match=r"'input' is float32.*the dtypes differ"):
        check_samples(cnn_case.calibration.astype(np.float64), spec, source="cal.npy")


def test_too_few_samples_is_an_error(cnn_case: Case) -> None:
    spec = input_spec(load_model(cnn_case.path))
    with pytest.raises(CalibrationDataError, match="has 5 samples for input 'input'; give at least 16"):
        check_samples(cnn_case.calibration[:5], spec, source="cal.npy")


def test_npz_with_several_arrays_needs_the_input_name(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros(3), b=np.zeros(3), input=np.ones(3))
    assert load_array(path, "input").tolist() == [1, 1, 1]
    with pytest.raises(CalibrationDataError, match="holds arrays a, b, input"):
        load_array(path, "other")


def test_labels_must_match_the_evaluation_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, np.arange(5))
    with pytest.raises(CalibrationDataError, match="give 7 integer class labels"):
        load_labels(path, 7)


def test_a_model_with_two_inputs_is_refused() -> None:
    node = helper.make_node("Relu", ["a"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(UnsupportedModelError, match=r"2 inputs \(a, b\)"):
        input_spec(helper.make_model(graph))
