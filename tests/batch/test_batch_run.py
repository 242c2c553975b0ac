"""``edgeship batch run`` end to end: real worker processes, a real workspace, the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from edgeship.batch.plan import parse_mini_batch_size, plan_input
from edgeship.batch.pool import PREFETCH
from edgeship.batch.runner import BatchOptions
from edgeship.batch.worker import format_rows
from edgeship.errors import InputError
from edgeship.registry import Model
from edgeship.workspace import Workspace

SCRIPTS = Path(__file__).resolve().parent / "scripts"
TABLE_SCRIPT = SCRIPTS / "table_score.py"
FILES_SCRIPT = SCRIPTS / "files_score.py"
ROWS = 1000


@dataclass
class World:
    workspace: Workspace
    root: Path
    table: Path  # ROWS rows: id, x
    files: Path  # f1.txt .. f23.txt holding their number


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("batch")
    ws = Workspace.at(root / "ws")
    ws.create()
    (root / "linear.json").write_text(json.dumps({"w": 2, "b": 1}))
    Model.register(ws, root / "linear.json", "linear")
    (root / "factor.txt").write_text("3")
    Model.register(ws, root / "factor.txt", "factor")
    table = root / "table.csv"
    pd.DataFrame({"id": range(ROWS), "x": range(ROWS)}).to_csv(table, index=False)
    files = root / "files"
    files.mkdir()
    for n in range(1, 24):
        (files / f"f{n}.txt").write_text(str(n))
    return World(ws, root, table, files)


def _cmd(world: World, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgeship", "batch", "run", *args, "--workspace", str(world.workspace.root)]


def _cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(world, *args), capture_output=True, text=True, timeout=120, check=False)


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _table_rows(output: Path) -> pd.DataFrame:
    return pd.read_csv(output / "parallel_run_step.txt", sep=" ", header=None, names=["id", "score"])


def test_format_rows_writes_dataframes_space_separated_and_lists_one_element_a_line() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y z"]})
    assert format_rows(frame) == (2, '1 x\n2 "y z"\n')
    assert format_rows(["a: 1", 2]) == (2, "a: 1\n2\n")
    with pytest.raises(TypeError, match="returned None"):
        format_rows(None)
    with pytest.raises(TypeError, match="returned a str"):
        format_rows("not a list")


def test_csv_with_two_workers_scores_every_row_once_in_input_order(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _summary(
        _cli(world, "-e", str(TABLE_SCRIPT), "-i", str(world.table), "-o", str(out), "-m", "linear:1",
             "--mini-batch-size", "100", "--workers", "2", "--json")
    )
    assert summary["items"] == ROWS and summary["miniBatches"] == 10 and summary["rowsOut"] == ROWS
    assert summary["failedItems"] == 0
    rows = _table_rows(out)
    assert rows["id"].tolist() == list(range(ROWS))
    assert rows["score"].tolist() == [2 * i + 1 for i in range(ROWS)]
    logs = "".join(p.read_text() for p in (out / ".edgeship-batch" / "logs").glob("worker-*.log"))
    assert logs.count("init() with AZUREML_MODEL_DIR=") == 2  # init() once per worker
    assert "azureml-models/linear/1" in logs


def test_parquet_split_by_amount_of_data(world: World, tmp_path: Path) -> None:
    parquet = tmp_path / "table.parquet"
    pd.read_csv(world.table).to_parquet(parquet)
    out = tmp_path / "out"
    summary = _summary(
        _cli(world, "-e", str(TABLE_SCRIPT), "-i", str(parquet), "-o", str(out), "-m", "linear",
             "--mini-batch-size", "1KB", "--workers", "2", "--json")
    )
    assert summary["rowsOut"] == ROWS
    assert 1 < int(summary["miniBatches"]) < ROWS  # ~1 KB of an about 8 KB table per mini-batch
    assert _table_rows(out)["id"].tolist() == list(range(ROWS))


def test_folder_of_files_with_two_workers(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _summary(
        _cli(world, "-e", str(FILES_SCRIPT), "-i", str(world.files), "-o", str(out), "-m", "factor:1",
             "--mini-batch-size", "4", "--workers", "2", "--json")
    )
    assert summary["items"] == 23 and summary["miniBatches"] == 6
    lines = (out / "parallel_run_step.txt").read_text().splitlines()
    assert sorted(lines) == sorted(f"f{n}.txt: {3 * n}" for n in range(1, 24))


def test_a_failing_mini_batch_within_the_threshold_is_retried_then_listed(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _summary(
        _cli(world, "-e", str(TABLE_SCRIPT), "-i", str(world.table), "-o", str(out), "-m", "linear:1",
             "--mini-batch-size", "100", "--workers", "2", "--error-threshold", "100", "--argument=--fail-id=150",
             "--json")
    )
    assert summary["failedItems"] == 100 and summary["rowsOut"] == ROWS - 100
    (failure,) = summary["failures"]  # type: ignore[misc]
    assert failure["miniBatch"] == 1 and failure["rows"] == [100, 200] and failure["attempts"] == 3
    assert failure["error"] == "ValueError: row id 150 is poisoned"
    ids = _table_rows(out)["id"].tolist()
    assert ids == [i for i in range(ROWS) if not 100 <= i < 200]


def test_beyond_the_threshold_the_run_stops_and_a_higher_threshold_resumes_it(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["-e", str(TABLE_SCRIPT), "-i", str(world.table), "-o", str(out), "-m", "linear:1",
            "--mini-batch-size", "100", "--workers", "2", "--max-tries", "1", "--argument=--fail-id=150"]
    stopped = _cli(world, *args, "--error-threshold", "99")
    assert stopped.returncode == 1
    assert "100 items failed, more than --error-threshold 99 allows" in stopped.stderr
    assert "ValueError: row id 150 is poisoned" in stopped.stderr
    assert not (out / "parallel_run_step.txt").exists()
    summary = _summary(_cli(world, *args, "--error-threshold", "100", "--json"))
    assert summary["resumed"] is True and summary["failedItems"] == 100
    assert len(_table_rows(out)) == ROWS - 100


def test_a_hanging_run_is_killed_at_the_timeout_and_a_dying_worker_is_replaced(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _summary(
        _cli(world, "-e", str(FILES_SCRIPT), "-i", str(world.files), "-o", str(out), "-m", "factor:1",
             "--mini-batch-size", "4", "--workers", "2", "--max-tries", "2", "--run-invocation-timeout", "1",
             "--error-threshold", "-1", "--argument=--hang-on=f12.txt", "--argument=--exit-on=f20.txt", "--json")
    )
    errors = {f["error"] for f in summary["failures"]}  # type: ignore[union-attr]
    assert errors == {
        "run() did not return within --run-invocation-timeout 1 s",
        "the worker process exited with code 3 during run()",
    }
    assert summary["failedItems"] == 8 and summary["rowsOut"] == 15
    assert len((out / "parallel_run_step.txt").read_text().splitlines()) == 15


def test_a_run_killed_with_sigkill_resumes_without_scoring_a_committed_mini_batch_twice(
    world: World, tmp_path: Path
) -> None:
    out, record = tmp_path / "out", tmp_path / "scored.txt"
    args = ["-e", str(TABLE_SCRIPT), "-i", str(world.table), "-o", str(out), "-m", "linear:1",
            "--mini-batch-size", "25", "--workers", "2", f"--argument=--record={record}", "--argument=--sleep=0.05"]
    proc = subprocess.Popen(_cmd(world, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = out / ".edgeship-batch" / "done"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(done_dir.glob("*.json"))) < 10:
        time.sleep(0.02)
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    committed = {int(p.stem) for p in done_dir.glob("*.json")}
    assert 10 <= len(committed) < 40, "the kill came too late to test a resume"
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "workers outlived their killed parent"

    summary = _summary(subprocess.run(_cmd(world, *args, "--json"), capture_output=True, text=True, timeout=120))
    assert summary["resumed"] is True and summary["rowsOut"] == ROWS and summary["failedItems"] == 0
    rows = _table_rows(out)
    assert rows["id"].tolist() == list(range(ROWS))  # every row exactly once: none lost, none twice
    scored = Counter(int(line.split()[0]) // 25 for line in record.read_text().splitlines())
    assert all(scored[index] == 1 for index in committed)  # committed before the kill: never scored again
    assert set(scored) == set(range(40))
    assert sum(scored.values()) <= 40 + 2 * PREFETCH  # only what two workers held at the kill, twice


def test_a_finished_run_is_not_scored_again_and_another_input_is_refused(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["-e", str(FILES_SCRIPT), "-i", str(world.files), "-o", str(out), "-m", "factor:1", "--json"]
    first = _summary(_cli(world, *args))
    again = _summary(_cli(world, *args))
    assert first["status"] == "completed" and again["status"] == "already-completed"
    assert again["rowsOut"] == 23
    other = _cli(world, "-e", str(TABLE_SCRIPT), "-i", str(world.table), "-o", str(out), "-m", "linear:1")
    assert other.returncode == 1
    assert "holds a run with a different" in other.stderr and "give another --output folder" in other.stderr


def test_bad_options_are_refused_before_any_work(world: World, tmp_path: Path) -> None:
    def options(**changes: object) -> BatchOptions:
        base = {"entry_script": FILES_SCRIPT, "input": world.files, "output": tmp_path / "out"}
        return BatchOptions(**{**base, **changes})  # type: ignore[arg-type]

    with pytest.raises(InputError, match="--workers 0 is out of range"):
        options(workers=0).check()
    with pytest.raises(InputError, match="--error-threshold -2 is invalid"):
        options(error_threshold=-2).check()
    with pytest.raises(InputError, match="must be a plain file name"):
        options(append_row_file_name="../x.txt").check()
    with pytest.raises(InputError, match="for a folder of files give a number of files"):
        plan_input(world.files, parse_mini_batch_size("1MB"))
    with pytest.raises(InputError, match=r"neither a folder nor a \.csv or \.parquet table"):
        plan_input(FILES_SCRIPT, parse_mini_batch_size("1"))
    assert not (tmp_path / "out").exists()


def test_a_bad_option_is_one_sentence_on_the_command_line(world: World, tmp_path: Path) -> None:
    done = _cli(world, "-e", str(FILES_SCRIPT), "-i", str(world.files), "-o", str(tmp_path / "out"),
                "--mini-batch-size", "ten")
    assert done.returncode == 1
    assert "--mini-batch-size 'ten' is not a size" in done.stderr and "Traceback" not in done.stderr


def test_an_init_failure_stops_the_run_with_the_scripts_own_error(world: World, tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text('def init():\n    raise RuntimeError("no model here")\n\n\ndef run(batch):\n    return batch\n')
    done = _cli(world, "-e", str(script), "-i", str(world.files), "-o", str(tmp_path / "out"), "--workers", "2")
    assert done.returncode == 1
    assert "init() in broken.py failed at broken.py:2: RuntimeError: no model here" in done.stderr
    assert "Traceback" not in done.stderr
