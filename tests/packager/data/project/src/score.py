# Azure ML v1 entry script, as the tutorials write it.
import json
import os

import joblib


def init():
    global model
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_mnist_model.pkl")
    model = joblib.load(model_path)


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return model.predict(data).tolist()
