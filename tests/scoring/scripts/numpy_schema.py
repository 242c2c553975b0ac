"""run() with a Numpy input schema: the decorator turns JSON lists into a float32 array."""

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]], dtype=np.float32)))
@output_schema(NumpyParameterType(np.array([6.0], dtype=np.float32)))
def run(data):
    assert isinstance(data, np.ndarray), type(data)
    if float(data.sum()) == 13.0:
        raise RuntimeError("unlucky sum")
    return {"sum": data.sum(axis=1), "dtype": str(data.dtype)}
