"""The integer-only reference reproduces onnxruntime's int8 tensors within one LSB."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Case

from edgeship.errors import QuantizationError
from edgeship.fpga.calibration import NumpyCalibrationReader
from edgeship.fpga.graph import input_spec, load_model, prepare
from edgeship.fpga.intref import max_lsb_difference, shift_round
from edgeship.fpga.quantize import QuantizeOptions, quantize


@pytest.mark.parametrize("per_channel", [False, True])
def test_reference_matches_onnxruntime_within_one_lsb(case: Case, per_channel: bool) -> None:
    fp32 = prepare(load_model(case.path))
    spec = input_spec(fp32)
    int8 = quantize(fp32, NumpyCalibrationReader(case.calibration, spec), QuantizeOptions(per_channel=per_channel))
    fixed = spec.shape[0]
    batches = [case.eval_data[i : i + 1] for i in range(8)] if fixed == 1 else [case.eval_data[:100]]
    for batch in batches:
        diffs = max_lsb_difference(int8, {spec.name: batch})
        assert len(diffs) >= 4
        assert max(diffs.values()) <= 1, diffs


def test_shift_round_is_round_half_to_even() -> None:
    values = np.arange(-1000, 1000, dtype=np.int64)
    for shift in range(0, 6):
        expected = np.round(values / 2.0**shift).astype(np.int64)  # numpy rounds half to even
        assert np.array_equal(shift_round(values, np.int64(shift)), expected)


def test_float_scales_are_refused_by_the_reference(mlp_case: Case) -> None:
    fp32 = prepare(load_model(mlp_case.path))
    spec = input_spec(fp32)
    int8 = quantize(fp32, NumpyCalibrationReader(mlp_case.calibration, spec), QuantizeOptions(scales="float"))
    with pytest.raises(QuantizationError, match="power of two"):
        max_lsb_difference(int8, {spec.name: mlp_case.eval_data})
