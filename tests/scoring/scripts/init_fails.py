"""init() that fails, as a script whose model file is missing would."""


def init():
    raise FileNotFoundError("model weights not found at /nowhere/model.pkl")


def run(data):
    return data
