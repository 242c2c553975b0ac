"""``run_batch``: score an input with an entry script over worker processes, resumably.

The runner owns the decisions: which mini-batch goes next, whether a failed
attempt is retried (``max_tries`` attempts in all, as ParallelRunStep's
``run_max_try``), when the error threshold is crossed, and when the output is
assembled. Workers (:mod:`edgeship.batch.pool`) only score; the journal
(:mod:`edgeship.batch.journal`) only records. Errors are counted in items, as
ParallelRunStep counts them: every item of a mini-batch whose last attempt
failed, and the items a successful ``run()`` did not return a row for.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeship.batch.journal import Journal, Outcome
from edgeship.batch.plan import InputPlan, MiniBatch, MiniBatchSize, parse_mini_batch_size, plan_input
from edgeship.batch.pool import Attempt, BatchError, WorkerPool
from edgeship.batch.worker import WorkerSpec
from edgeship.errors import InputError

__all__ = ["BatchOptions", "BatchSummary", "ProgressFn", "ThresholdExceededError", "run_batch"]

OutputAction = Literal["append_row", "summary_only"]
ProgressFn = Callable[[int, int], None]  # (items done, items in all)
DEFAULT_APPEND_ROW_FILE = "parallel_run_step.txt"


@dataclass(frozen=True)
class BatchOptions:
    """One batch run; the defaults are ParallelRunConfig's."""

    entry_script: Path
    input: Path
    output: Path
    mini_batch_size: str = "10"
    workers: int = 1
    error_threshold: int = 10  # items; -1 ignores every failure
    run_invocation_timeout_s: float = 60.0
    max_tries: int = 3
    output_action: OutputAction = "append_row"
    append_row_file_name: str = DEFAULT_APPEND_ROW_FILE
    source_dir: Path | None = None
    arguments: tuple[str, ...] = ()

    def check(self) -> None:
        if not self.entry_script.is_file():
            raise InputError(f"Entry script {self.entry_script} does not exist; pass the path of your batch script.")
        if self.source_dir is not None and not self.source_dir.is_dir():
            raise InputError(f"--source-dir {self.source_dir} is not a folder.")
        if not 1 <= self.workers <= 64:
            raise InputError(f"--workers {self.workers} is out of range; give 1 to 64 worker processes.")
        if self.error_threshold < -1:
            raise InputError(f"--error-threshold {self.error_threshold} is invalid; give -1 (ignore all) or more.")
        if not 0 < self.run_invocation_timeout_s <= 86_400:
            raise InputError("--run-invocation-timeout must be between 0 and 86400 seconds.")
        if not 1 <= self.max_tries <= 100:
            raise InputError(f"--max-tries {self.max_tries} is out of range; give 1 to 100 attempts.")
        name = self.append_row_file_name
        if not name or "/" in name or name.startswith(".") or len(name) > 255:
            raise InputError(f"--append-row-file-name {name!r} must be a plain file name, not a path.")


@dataclass
class BatchSummary:
    status: str  # "completed" or "already-completed"
    items: int
    mini_batches: int
    rows_out: int
    failed_items: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    output_file: str | None = None
    resumed: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "items": self.items,
            "miniBatches": self.mini_batches,
            "rowsOut": self.rows_out,
            "failedItems": self.failed_items,
            "failures": self.failures,
            "outputFile": self.output_file,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 3),
        }


class ThresholdExceededError(BatchError):
    """More items failed than ``--error-threshold`` allows; ``failures`` lists the failed mini-batches."""

    def __init__(self, message: str, failures: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.failures = failures


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _failure(plan: InputPlan, outcome: Outcome) -> dict[str, Any]:
    batch = plan.batches[outcome.index]
    where: dict[str, Any] = {"files": list(batch.files)} if batch.files else {"rows": [batch.start, batch.stop]}
    error = outcome.error or f"run() returned {outcome.rows_out} rows for {outcome.items} items"
    return {"miniBatch": outcome.index, "items": outcome.items, "attempts": outcome.attempts, "error": error, **where}


def _payload(plan: InputPlan, batch: MiniBatch) -> Any:
    if plan.table is not None:
        return plan.table.iloc[batch.start : batch.stop]
    return list(batch.files)


def run_batch(
    options: BatchOptions,
    *,
    model_dir: Path,
    models: Sequence[str] = (),
    on_progress: ProgressFn | None = None,
) -> BatchSummary:
    """Score ``options.input`` into ``options.output``; resume a run that was stopped there.

    ``model_dir`` is the folder ``AZUREML_MODEL_DIR`` points at (prepared by the
    caller); ``models`` names its models (``name:version@digest``) for the run's
    identity. Raises :class:`ThresholdExceededError` when errors pass the
    threshold (the journal is kept: rerun with a higher threshold to go on).
    """
    options.check()
    began = time.monotonic()
    size = parse_mini_batch_size(options.mini_batch_size)
    journal = Journal(options.output.expanduser().resolve())
    pool: WorkerPool | None = None
    if not journal.complete_file.is_file():
        # Workers load the script and call init() while the input is read and split: both take seconds.
        journal.logs_dir.mkdir(parents=True, exist_ok=True)
        pool = WorkerPool(_worker_spec(options, journal, model_dir), options.workers, options.run_invocation_timeout_s)
        pool.start()
    try:
        return _run(options, size, journal, pool, models, on_progress, began)
    finally:
        if pool is not None:
            pool.close()


def _worker_spec(options: BatchOptions, journal: Journal, model_dir: Path) -> WorkerSpec:
    return WorkerSpec(
        entry_script=str(options.entry_script.resolve()),
        source_dir=str(options.source_dir.resolve()) if options.source_dir else None,
        model_dir=str(model_dir),
        output_dir=str(journal.output_dir),
        logs_dir=str(journal.logs_dir),
        arguments=options.arguments,
        parent_pid=os.getpid(),
    )


def _run(
    options: BatchOptions,
    size: MiniBatchSize,
    journal: Journal,
    pool: WorkerPool | None,
    models: Sequence[str],
    on_progress: ProgressFn | None,
    began: float,
) -> BatchSummary:
    plan = plan_input(options.input, size)
    identity = {
        "input": str(plan.source),
        "inputFingerprint": plan.fingerprint,
        "miniBatchSize": options.mini_batch_size,
        "miniBatches": len(plan.batches),
        "entryScript": _sha256(options.entry_script),
        "models": sorted(models),
        "outputAction": options.output_action,
        "appendRowFileName": options.append_row_file_name,
    }
    resumed = journal.open(identity)
    output_file = journal.output_dir / options.append_row_file_name if options.output_action == "append_row" else None
    total = plan.total_items
    finished = journal.finished_summary()
    if finished is not None:
        if on_progress:
            on_progress(total, total)
        return BatchSummary(
            status="already-completed",
            items=int(finished["items"]),
            mini_batches=int(finished["miniBatches"]),
            rows_out=int(finished["rowsOut"]),
            failed_items=int(finished["failedItems"]),
            failures=list(finished["failures"]),
            output_file=finished.get("outputFile"),
            resumed=True,
        )
    outcomes = journal.outcomes()
    pending = deque(b for b in plan.batches if b.index not in outcomes)

    def progress() -> None:
        if on_progress:
            on_progress(sum(o.items for o in outcomes.values()), total)

    def check_threshold() -> None:
        failed = sum(o.failed_items for o in outcomes.values())
        if options.error_threshold >= 0 and failed > options.error_threshold:
            failures = [_failure(plan, o) for o in sorted(outcomes.values(), key=lambda o: o.index) if o.failed_items]
            first = failures[0]
            raise ThresholdExceededError(
                f"{failed} items failed, more than --error-threshold {options.error_threshold} allows "
                f"(first: mini-batch {first['miniBatch']}: {first['error']}); fix the script or raise the "
                f"threshold and rerun the same command to resume.",
                failures,
            )

    progress()
    check_threshold()
    if pending:
        assert pool is not None  # started unless the run was complete
        _score(options, plan, journal, pool, pending, outcomes, progress, check_threshold)
    ordered = sorted(outcomes.values(), key=lambda o: o.index)
    if output_file is not None:
        journal.assemble(output_file, [o.index for o in ordered if o.error is None])
    summary = BatchSummary(
        status="completed",
        items=total,
        mini_batches=len(plan.batches),
        rows_out=sum(o.rows_out for o in ordered),
        failed_items=sum(o.failed_items for o in ordered),
        failures=[_failure(plan, o) for o in ordered if o.failed_items],
        output_file=str(output_file) if output_file else None,
        resumed=resumed,
        seconds=time.monotonic() - began,
    )
    journal.finish(summary.to_json())
    return summary


def _score(
    options: BatchOptions,
    plan: InputPlan,
    journal: Journal,
    pool: WorkerPool,
    pending: deque[MiniBatch],
    outcomes: dict[int, Outcome],
    progress: Callable[[], None],
    check_threshold: Callable[[], None],
) -> None:
    tries: dict[int, int] = {}
    keep_rows = options.output_action == "append_row"
    while pending or pool.busy():
        finished: list[Attempt] = []
        for attempt in pool.wait():
            batch = plan.batches[attempt.index]
            if not attempt.attempted:
                pending.appendleft(batch)
                continue
            tries[batch.index] = tries.get(batch.index, 0) + 1
            if attempt.error is not None and tries[batch.index] < options.max_tries:
                pending.appendleft(batch)  # retried first, so a failing input is known early
                continue
            finished.append(attempt)
        while pending and pool.idle():  # workers get their next mini-batch before the journal writes
            batch = pending.popleft()
            pool.submit(batch.index, _payload(plan, batch))
        for attempt in finished:
            batch = plan.batches[attempt.index]
            outcome = Outcome(batch.index, batch.items, attempt.rows_out, tries[batch.index], attempt.error)
            rows = attempt.text if keep_rows and attempt.error is None else None
            outcomes[batch.index] = journal.commit(outcome, rows)
            progress()
            check_threshold()

