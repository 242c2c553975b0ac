"""The floor: the same entry script's init() and run() in one process, a plain loop over the same mini-batches.

Reads the table, calls init() once, then run() per mini-batch of --rows rows and
writes the returned rows as --append-row would (format_rows, one file), so the
work per row is that of 'edgeship batch run' without workers, pipes or journal.
"""

import argparse
import importlib.util
import os
import sys
import time

import pandas as pd

from edgeship.batch.worker import format_rows
from edgeship.scoring.shims import install_shims


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    began = time.perf_counter()
    os.environ["AZUREML_MODEL_DIR"] = args.model_dir
    install_shims()
    spec = importlib.util.spec_from_file_location("entry", args.script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = pd.read_csv(args.table)
    module.init()
    rows = 0
    with open(args.output, "w") as out:
        for start in range(0, len(table), args.rows):
            count, text = format_rows(module.run(table.iloc[start : start + args.rows]))
            rows += count
            out.write(text)
    print(f"{rows} {time.perf_counter() - began:.3f}", file=sys.stdout)


if __name__ == "__main__":
    main()
