"""The run's journal in ``OUTPUT/.edgeship-batch/``: what is done, committed so a kill loses nothing.

Layout::

    run.json              what this run is (fingerprint of input, size, script, models, output)
    rows/<index>.txt      the rows mini-batch <index> returned, already in parallel_run_step.txt form
    done/<index>.json     the mini-batch's outcome: items in, rows out, error (the commit point)
    logs/worker-<n>.log   what the entry script printed

Only the parent process writes here. A mini-batch is committed in two atomic
writes (temporary file, rename): its rows file, then its ``done`` record; the
record is the commit point, so a kill between the two leaves a rows file that a
resumed run overwrites. A resumed run skips every index with a record and scores
the rest, so a committed mini-batch is never scored again and an uncommitted one
is never lost. The output file is assembled from the rows files in index order
only when every mini-batch has a record (an atomic replace), then ``complete.json``
marks the run finished.

Per mini-batch nothing is fsync'ed: a killed process loses nothing the kernel
already has, and two fsyncs per mini-batch put the disk's latency between a
worker and its next mini-batch (tens of ms each on a busy disk). Against a power
loss, the record carries the rows' sha256: a resumed run re-reads every rows file
and scores again any mini-batch whose file is missing or differs. The assembled
output and ``complete.json`` are fsync'ed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgeship.errors import InputError
from edgeship.fsutil import atomic_write_text

__all__ = ["STATE_FOLDER", "Journal", "Outcome"]

STATE_FOLDER = ".edgeship-batch"
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Outcome:
    """How one mini-batch ended: ``rows_out`` rows returned, or ``error`` after its last attempt."""

    index: int
    items: int
    rows_out: int
    attempts: int
    error: str | None = None
    rows_digest: str | None = None  # sha256 of the rows file, when one was written

    @property
    def failed_items(self) -> int:
        """Items counted against the error threshold: all of a failed mini-batch, else those not returned."""
        return self.items if self.error is not None else max(0, self.items - self.rows_out)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _replace_file(path: Path, data: bytes) -> None:
    """Write-then-rename without fsync: whole or absent after a kill (see the module docstring)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


class Journal:
    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.root = output_dir / STATE_FOLDER
        self.rows_dir = self.root / "rows"
        self.done_dir = self.root / "done"
        self.logs_dir = self.root / "logs"

    # The run's identity ------------------------------------------------------
    def open(self, identity: dict[str, Any]) -> bool:
        """Start or resume the run described by ``identity``; True when resuming.

        A folder holding a different run (other input, size, script, models or
        output mode) is refused rather than mixed with this one.
        """
        run_file = self.root / "run.json"
        if run_file.is_file():
            try:
                recorded = json.loads(run_file.read_text())
            except ValueError as exc:
                raise InputError(f"{run_file} is damaged ({exc}); remove {self.root} to start the run afresh.") from exc
            if recorded != identity:
                changed = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
                raise InputError(
                    f"{self.output_dir} holds a run with a different {', '.join(changed)}; "
                    "give another --output folder, or remove this one to start again."
                )
            resumed = True
        else:
            listing = self.output_dir.iterdir() if self.output_dir.is_dir() else iter(())
            if any(p.name != STATE_FOLDER for p in listing):
                raise InputError(
                    f"--output {self.output_dir} is not empty and holds no batch run; give an empty or new folder."
                )
            atomic_write_text(run_file, json.dumps(identity, indent=2, sort_keys=True) + "\n")
            resumed = False
        for folder in (self.rows_dir, self.done_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return resumed

    # Mini-batches ------------------------------------------------------------
    def outcomes(self) -> dict[int, Outcome]:
        """Every committed mini-batch, by index."""
        """Every committed mini-batch, by index; a record that is unreadable or whose rows no longer match goes."""
        found: dict[int, Outcome] = {}
        for path in self.done_dir.glob("*.json"):
            if not path.stem.isdigit():
                continue
            try:
                outcome = Outcome(**json.loads(path.read_text()))
                rows = self.rows_dir / f"{outcome.index}.txt"
                intact = outcome.rows_digest is None or _digest(rows) == outcome.rows_digest
            except (ValueError, TypeError, OSError):
                intact = False  # half a file after a power loss: that mini-batch is scored again
            if intact:
                found[int(path.stem)] = outcome
            else:
                path.unlink(missing_ok=True)
        return found

    def commit(self, outcome: Outcome, rows_text: str | None) -> Outcome:
        """Record one mini-batch: its rows first, then the record that makes it done; returns the record."""
        if rows_text is not None:
            data = rows_text.encode("utf-8")
            outcome = replace(outcome, rows_digest=hashlib.sha256(data).hexdigest())
            _replace_file(self.rows_dir / f"{outcome.index}.txt", data)
        record = json.dumps(asdict(outcome), sort_keys=True).encode("utf-8")
        _replace_file(self.done_dir / f"{outcome.index}.json", record)
        return outcome

    # Finishing ---------------------------------------------------------------
    def assemble(self, target: Path, indexes: list[int]) -> None:
        """Write ``target`` from the rows files of ``indexes`` in order, replacing it atomically."""
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-")
        try:
            with os.fdopen(fd, "wb") as out:
                for index in indexes:
                    part = self.rows_dir / f"{index}.txt"
                    if part.is_file():
                        with part.open("rb") as src:
                            shutil.copyfileobj(src, out, _COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    @property
    def complete_file(self) -> Path:
        return self.root / "complete.json"

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run complete; the rows files are no longer needed once the output is assembled."""
        atomic_write_text(self.complete_file, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(self.rows_dir, ignore_errors=True)

    def finished_summary(self) -> dict[str, Any] | None:
        if not self.complete_file.is_file():
            return None
        return dict(json.loads(self.complete_file.read_text()))
