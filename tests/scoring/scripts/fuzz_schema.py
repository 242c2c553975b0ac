"""A decorated run() that never raises on what its decorators deliver, so any 5xx is the server's.

Nested StandardPython and Numpy schemas give the fuzzer a rich input document;
run() reads defensively (inference-schema does not enforce the keys of a nested
dict) and returns what its output schema says, so responses can be checked too.
"""

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

inputs = StandardPythonParameterType(
    {"arr": NumpyParameterType(np.array([[1.0, 2.0]], dtype=np.float32)), "label": StandardPythonParameterType("a")}
)


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1, 2, 3]], dtype=np.int64)))
@input_schema("Inputs", inputs)
@input_schema("GlobalParameters", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType({"rows": 1, "columns": 3, "label": "a"}))
def run(data, Inputs, GlobalParameters=1.0):
    arr = Inputs.get("arr") if isinstance(Inputs, dict) else None
    label = Inputs.get("label") if isinstance(Inputs, dict) else None
    return {
        "rows": int(np.shape(data)[0]) if np.ndim(data) else 0,
        "columns": int(np.shape(data)[-1]) if np.ndim(data) else 0,
        "label": label if isinstance(label, str) else type(arr).__name__,
    }
