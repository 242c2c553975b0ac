"""Nested StandardPython schema holding a Numpy array, plus a second parameter with a default."""

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

inputs = StandardPythonParameterType(
    {"arr": NumpyParameterType(np.array([[1, 2]], dtype=np.int64)), "scale": StandardPythonParameterType(2.0)}
)


def init():
    pass


@input_schema("GlobalParameters", StandardPythonParameterType(1.0))
@input_schema("Inputs", inputs)
@output_schema(StandardPythonParameterType({"total": 6.0, "arr_type": "ndarray"}))
def run(Inputs, GlobalParameters=1.0):
    arr = Inputs["arr"]
    return {
        "total": float(arr.sum() * Inputs["scale"] * GlobalParameters),
        "arr_type": type(arr).__name__,
        "shape": list(arr.shape),
    }
