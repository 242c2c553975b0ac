"""Resolves models the Azure ML way in init() and reports what it found."""

import os

from azureml.core.model import Model

found = {}


def init():
    for name in os.environ["TEST_MODEL_NAMES"].split(","):
        path = Model.get_model_path(name)
        text = None
        if os.path.isfile(path):
            with open(path) as f:
                text = f.read()
        found[name] = {"path": path, "text": text}
    if "TEST_MODEL_V1" in os.environ:
        name = os.environ["TEST_MODEL_V1"]
        found["v1"] = {"path": Model.get_model_path(name, version=1)}


def run(data):
    return {"model_dir": os.environ["AZUREML_MODEL_DIR"], "found": found}
