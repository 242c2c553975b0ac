"""ParallelRunStep entry script for the batch benchmark: a 64-H-H-10 MLP in numpy over a DataFrame.

H is run.py's --hidden. The model is an .npz of weights (no pickle) registered as "mlp"; run()
returns the input's "id" column with the predicted class, one row per input row.
"""

import numpy as np
from azureml.core.model import Model

layers = None


def init():
    global layers
    with np.load(Model.get_model_path("mlp"), allow_pickle=False) as weights:
        layers = [(weights[f"w{i}"], weights[f"b{i}"]) for i in range(3)]


def run(mini_batch):
    x = mini_batch.drop(columns=["id"]).to_numpy(dtype=np.float32)
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            np.maximum(x, 0, out=x)
    result = mini_batch[["id"]].copy()
    result["label"] = x.argmax(axis=1)
    return result
