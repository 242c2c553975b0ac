"""An Azure ML v1 entry script with a known cost, for profiling tests (written for edgeship's tests).

init() reads the model (JSON: milliseconds of work per request and MiB to hold)
through Model.get_model_path and allocates that memory, touching every page;
run(data) sleeps the model's milliseconds, then (with "spin_ms") computes for that
many milliseconds of CPU time, and echoes the request's "id".
"""

import json
import time

from azureml.core.model import Model

cost = None
ballast = None


def init():
    global cost, ballast
    with open(Model.get_model_path("costly")) as f:
        cost = json.load(f)
    ballast = bytearray(cost["mib"] * 1024 * 1024)
    for at in range(0, len(ballast), 4096):
        ballast[at] = 1


def run(data):
    request = json.loads(data)
    time.sleep(cost["ms"] / 1000)
    until = time.process_time() + cost.get("spin_ms", 0) / 1000
    while time.process_time() < until:
        pass
    return {"id": request.get("id") if isinstance(request, dict) else request}
