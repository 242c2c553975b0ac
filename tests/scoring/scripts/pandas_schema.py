"""run() with a Pandas input schema (records orient, as Azure ML's samples send it)."""

import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

sample = pd.DataFrame({"a": [1], "b": [2.5], "name": ["x"]})


def init():
    pass


@input_schema("data", PandasParameterType(sample))
@output_schema(StandardPythonParameterType({"rows": 1, "total": 3.5}))
def run(data):
    assert isinstance(data, pd.DataFrame), type(data)
    return {"rows": len(data), "total": float((data["a"] + data["b"]).sum()), "names": list(data["name"])}
