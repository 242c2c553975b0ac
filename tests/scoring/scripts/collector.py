"""Collects inputs and predictions with Azure ML's ModelDataCollector."""

import json

import numpy as np
from azureml.monitoring import ModelDataCollector

collectors = {}


def init():
    collectors["inputs"] = ModelDataCollector("digits", designation="inputs", feature_names=["a", "b"])
    collectors["predictions"] = ModelDataCollector("digits", designation="predictions")


def run(data):
    rows = json.loads(data)["data"]
    collectors["inputs"].collect(rows)
    prediction = np.array([sum(r) for r in rows])
    correlation = collectors["predictions"].collect(prediction)
    return {"prediction": prediction, "correlation": correlation}
