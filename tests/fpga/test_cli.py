"""``edgeship fpga quantize`` end to end in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import Case


def edgeship(*args: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGESHIP_HOME": str(workspace), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "edgeship", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_quantize_registers_a_variant_that_model_show_prints(tmp_path: Path, mlp_case: Case) -> None:
    ws = tmp_path / "ws"
    assert edgeship("init", workspace=ws).returncode == 0, "workspace init"
    assert edgeship("model", "register", "-n", "digits", "-p", str(mlp_case.path), workspace=ws).returncode == 0
    np.save(tmp_path / "cal.npy", mlp_case.calibration)
    np.save(tmp_path / "eval.npy", mlp_case.eval_data)
    np.save(tmp_path / "labels.npy", mlp_case.labels)
    done = edgeship(
        "fpga",
        "quantize",
        "-m",
        "digits:1",
        "--calibration",
        str(tmp_path / "cal.npy"),
        "--eval",
        str(tmp_path / "eval.npy"),
        "--labels",
        str(tmp_path / "labels.npy"),
        workspace=ws,
    )
    assert done.returncode == 0, done.stderr
    assert "top-1 agreement" in done.stdout and "Registered digits version 2" in done.stdout
    shown = edgeship("model", "show", "digits:2", workspace=ws)
    record = json.loads(shown.stdout)
    assert record["tags"]["variant"] == "fpga-int8" and record["tags"]["parent"] == "digits:1"
    assert "top1_agreement" in json.loads(record["properties"]["quantization_report"])["evaluation"]


def test_wrong_shape_is_one_sentence_naming_the_tensor(tmp_path: Path, mlp_case: Case) -> None:
    ws = tmp_path / "ws"
    edgeship("init", workspace=ws)
    edgeship("model", "register", "-n", "digits", "-p", str(mlp_case.path), workspace=ws)
    np.save(tmp_path / "cal.npy", mlp_case.calibration.reshape(-1, 8, 8))
    done = edgeship("fpga", "quantize", "-m", "digits:1", "--calibration", str(tmp_path / "cal.npy"), workspace=ws)
    assert done.returncode == 1
    assert "model input 'input' is float32[N,64]" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
