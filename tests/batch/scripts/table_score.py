"""A ParallelRunStep entry script for tabular input, in the shape of Azure's iris sample (written for edgeship's tests).

init() reads a linear model (JSON weights) through Model.get_model_path; run(mini_batch)
gets a DataFrame and returns it with a ``score`` column, one row per input row.
Arguments (as ParallelRunStep's ``arguments=``) make it misbehave on purpose:
``--fail-id N`` raises for a mini-batch holding row id N, ``--sleep S`` waits S
seconds per mini-batch, ``--record FILE`` appends "first-id pid" per scored mini-batch.
"""

import argparse
import json
import os
import time

from azureml.core.model import Model
from azureml_user.parallel_run import EntryScript

weights = None
args = None


def init():
    global weights, args
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-id", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--record", default=None)
    args, _ = parser.parse_known_args()
    with open(Model.get_model_path("linear")) as f:
        weights = json.load(f)
    EntryScript().logger.info("init() with AZUREML_MODEL_DIR=%s", os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch):
    if args.sleep:
        time.sleep(args.sleep)
    if args.fail_id is not None and (mini_batch["id"] == args.fail_id).any():
        raise ValueError(f"row id {args.fail_id} is poisoned")
    result = mini_batch[["id"]].copy()
    result["score"] = mini_batch["x"] * weights["w"] + weights["b"]
    if args.record:
        with open(args.record, "a") as f:
            f.write(f"{int(mini_batch['id'].iloc[0])} {os.getpid()}\n")
    return result
