"""A ParallelRunStep entry script for a folder of files, in the shape of Azure's digit sample (written for the tests).

run(mini_batch) gets a list of file paths and returns "<file name>: <label>" per
file, the label being the file's number times the model's factor. ``--fail-on NAME``
raises for a mini-batch holding NAME; ``--hang-on NAME`` never returns for it
(the invocation timeout must end it); ``--exit-on NAME`` kills its own process.
"""

import argparse
import os
import time

from azureml.core import Model

factor = None
args = None


def init():
    global factor, args
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-on", default=None)
    parser.add_argument("--hang-on", default=None)
    parser.add_argument("--exit-on", default=None)
    args, _ = parser.parse_known_args()
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    with open(Model.get_model_path("factor")) as f:
        factor = int(f.read())
    print("init:", model_dir)


def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if args.fail_on in names:
        raise RuntimeError(f"{args.fail_on} cannot be read")
    if args.hang_on in names:
        time.sleep(3600)
    if args.exit_on in names:
        os._exit(3)
    out = []
    for path in mini_batch:
        with open(path) as f:
            out.append(f"{os.path.basename(path)}: {int(f.read()) * factor}")
    return out
