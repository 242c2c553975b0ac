# mypy: ignore-errors
# (an unmodified-style Azure ML entry script: user code that edgeship runs, not part of its typed API)
"""Azure ML v1 entry script for the digits MLP (ONNX).

Written as it would be for Azure ML: it runs unchanged under Azure ML's
inference server and under `edgeship serve --entry-script score.py -m digits`.
"""

import os

import numpy as np
import onnxruntime
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

# One 8x8 digit (a "2"), pixel values 0-16, flattened to 64 floats.
input_sample = np.array(
    [[0.0, 0.0, 7.0, 16.0, 14.0, 3.0, 0.0, 0.0, 0.0, 0.0, 9.0, 14.0, 11.0, 15.0, 0.0, 0.0,
      0.0, 0.0, 1.0, 5.0, 0.0, 15.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 16.0, 5.0, 0.0,
      0.0, 0.0, 0.0, 0.0, 3.0, 16.0, 4.0, 0.0, 0.0, 0.0, 0.0, 1.0, 12.0, 14.0, 1.0, 0.0,
      0.0, 0.0, 5.0, 12.0, 16.0, 16.0, 14.0, 1.0, 0.0, 0.0, 8.0, 16.0, 14.0, 10.0, 13.0, 3.0]],
    dtype=np.float32,
)
output_sample = {
    "predictions": [2],
    "probabilities": [[0.0, 0.0, 0.99, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
}


def init():
    global session, input_name
    # AZUREML_MODEL_DIR is the folder of the deployed model version; digits.onnx sits at its root.
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "digits.onnx")
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name


@input_schema("data", NumpyParameterType(input_sample))
@output_schema(StandardPythonParameterType(output_sample))
def run(data):
    labels, probabilities = session.run(None, {input_name: data})
    return {"predictions": labels.tolist(), "probabilities": probabilities.tolist()}
