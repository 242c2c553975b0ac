"""The telemetry queue as a folder of files: a kill at any point neither reuses a seq nor loses a count.

``queue.json`` is the commit point (``agent/telemetry/queue.py``); these tests kill a real
process that pushes and acknowledges in a loop, and lay out by hand the states a kill
between two steps leaves.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeship.agent.telemetry.queue import TelemetryQueue

_WORKER = r"""
import sys
from pathlib import Path
from edgeship.agent.telemetry.queue import TelemetryQueue
queue = TelemetryQueue(Path(sys.argv[1]), limit=20)
n = 0
while True:
    queue.push({"n": n})
    n += 1
    if n % 7 == 0:
        batch = queue.peek(5)
        if batch is not None:
            queue.ack(batch)
    if n == 30:
        print("going", flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
def test_a_queue_killed_mid_write_reopens_consistent(tmp_path: Path, delay: float) -> None:
    folder = tmp_path / "telemetry"
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(folder)], stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"going\n"
        time.sleep(delay)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    queue = TelemetryQueue(folder, limit=20)
    meta = json.loads((folder / "queue.json").read_text())
    batch = queue.peek(100)
    assert batch is not None
    seqs = [s["seq"] for s in batch.samples]
    assert seqs == sorted(set(seqs)) and len(seqs) == len(queue) <= 20
    assert all(meta["floor"] <= s < meta["nextSeq"] for s in seqs)
    assert sorted(int(p.stem) for p in folder.glob("0*.json")) == seqs  # nothing below the floor is left
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no scratch file is left either
    assert queue.push({"n": -1}) >= meta["nextSeq"]  # never a seq given before the kill


def test_files_below_the_floor_are_gone_and_an_unreadable_sample_is_skipped(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q")
    for n in range(4):
        queue.push({"n": n})
    batch = queue.peek(2)
    assert batch is not None
    queue.ack(batch)
    (tmp_path / "q" / f"{1:020d}.json").write_text("{}")  # a kill after queue.json, before the file's removal
    (tmp_path / "q" / f"{4:020d}.json").write_text("")  # a power cut during the file's write
    again = TelemetryQueue(tmp_path / "q")
    batch = again.peek()
    assert batch is not None and [s["n"] for s in batch.samples] == [2]
    assert not (tmp_path / "q" / f"{1:020d}.json").exists() and not (tmp_path / "q" / f"{4:020d}.json").exists()


def test_an_unreadable_queue_json_counts_on_from_the_samples(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q")
    last = [queue.push({"n": n}) for n in range(3)][-1]
    (tmp_path / "q" / "queue.json").write_text("{not json")
    again = TelemetryQueue(tmp_path / "q")
    assert len(again) == 3 and again.push({"n": 3}) == last + 1
