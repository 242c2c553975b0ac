"""``edgeship batch run``: score a folder of files or a table with a ParallelRunStep entry script.

Options mirror ``ParallelRunConfig`` (``mini_batch_size``, ``process_count_per_node``
as ``--workers``, ``error_threshold``, ``run_invocation_timeout``, ``run_max_try``
as ``--max-tries``, ``output_action``). The work is :func:`edgeship.batch.runner.run_batch`;
this module lays the models out, shows progress and prints the outcome.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from edgeship.cli._common import WorkspaceOpt, console, err_console, print_json, workspace_from
from edgeship.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Task

    from edgeship.batch.runner import BatchSummary

__all__ = ["app"]

app = typer.Typer(help="Batch scoring with Azure ML ParallelRunStep entry scripts.", no_args_is_help=True)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} rows/s")


def _models(workspace: Path | None, refs: list[str], root: Path) -> tuple[Path, list[str]]:
    """Lay the models out under ``root`` as a scoring module has them; AZUREML_MODEL_DIR and their identities."""
    from edgeship.fsutil import atomic_dir
    from edgeship.registry import Model, parse_model_ref
    from edgeship.scoring.layout import MODELS_FOLDER, azureml_model_dir, lay_out_models

    ws = workspace_from(workspace) if refs else None
    parsed = [parse_model_ref(r) for r in refs]
    with atomic_dir(root) as build:  # laid out afresh each start (hard links): a kill never leaves half a model
        (build / MODELS_FOLDER).mkdir()
        deployed = lay_out_models(ws, parsed, build) if ws is not None else []
    if ws is None:
        return root / MODELS_FOLDER, []
    names = [f"{d.name}:{d.version}@{Model.get(ws, d.name, d.version).digest}" for d in deployed]
    final = [replace(d, version_dir=root / d.version_dir.relative_to(build)) for d in deployed]
    return Path(azureml_model_dir(root, final)), names


@app.command("run")
def run(
    entry_script: Annotated[Path, typer.Option("--entry-script", "-e", help="Script with init() and run(mini_batch).")],
    input_path: Annotated[Path, typer.Option("--input", "-i", help="Folder of files, or a .csv / .parquet table.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (rerun the same command to resume).")],
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Registered model NAME[:VERSION] (repeatable).")
    ] = None,
    mini_batch_size: Annotated[
        str, typer.Option("--mini-batch-size", help="Files per mini-batch; rows, or an amount like 1MB, for tables.")
    ] = "10",
    workers: Annotated[int, typer.Option("--workers", help="Worker processes; each calls init() once.")] = 1,
    error_threshold: Annotated[
        int, typer.Option("--error-threshold", help="Failed items (rows or files) tolerated; -1 ignores all.")
    ] = 10,
    run_invocation_timeout: Annotated[
        float, typer.Option("--run-invocation-timeout", help="Seconds one run() may take before its worker is killed.")
    ] = 60.0,
    max_tries: Annotated[int, typer.Option("--max-tries", help="Attempts per mini-batch (ParallelRunStep: 3).")] = 3,
    append_row: Annotated[
        bool, typer.Option("--append-row/--summary-only", help="Write returned rows to one file, or only count them.")
    ] = True,
    append_row_file_name: Annotated[
        str, typer.Option("--append-row-file-name", help="Name of the --append-row file.")
    ] = "parallel_run_step.txt",
    source_dir: Annotated[
        Path | None, typer.Option("--source-dir", help="Folder added to sys.path for the script's own modules.")
    ] = None,
    argument: Annotated[
        list[str] | None, typer.Option("--argument", help="Argument for the script's sys.argv (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Score every file or row with init() once per worker and run(mini_batch); resumes where it stopped."""
    from edgeship.batch.journal import STATE_FOLDER
    from edgeship.batch.runner import BatchOptions, ThresholdExceededError, run_batch

    options = BatchOptions(
        entry_script=entry_script,
        input=input_path,
        output=output,
        mini_batch_size=mini_batch_size,
        workers=workers,
        error_threshold=error_threshold,
        run_invocation_timeout_s=run_invocation_timeout,
        max_tries=max_tries,
        output_action="append_row" if append_row else "summary_only",
        append_row_file_name=append_row_file_name,
        source_dir=source_dir,
        arguments=tuple(argument or ()),
    )
    options.check()
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; give a folder for the results.")
    model_dir, names = _models(workspace, list(model or []), output.expanduser().resolve() / STATE_FOLDER / "models")
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        _RateColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=as_json,
        disable=as_json,
    ) as bar:
        task = bar.add_task("scoring", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = run_batch(options, model_dir=model_dir, models=names, on_progress=on_progress)
        except ThresholdExceededError as exc:
            bar.stop()
            if not as_json:
                _print_failures(exc.failures)
            raise
    if as_json:
        print_json(summary.to_json())
        return
    _print_summary(summary)


def _print_failures(failures: list[dict[str, object]]) -> None:
    if not failures:
        return
    table = Table("mini-batch", "items", "attempts", "error", box=None)
    for f in failures[:50]:
        table.add_row(str(f["miniBatch"]), str(f["items"]), str(f["attempts"]), str(f["error"]))
    err_console.print(table)
    if len(failures) > 50:
        err_console.print(f"... and {len(failures) - 50} more failed mini-batches.")


def _print_summary(summary: BatchSummary) -> None:
    _print_failures(summary.failures)
    state = "was already complete" if summary.status == "already-completed" else "completed"
    resumed = " (resumed)" if summary.resumed and summary.status == "completed" else ""
    console.print(
        f"Batch run {state}{resumed}: {summary.items} items in {summary.mini_batches} mini-batches, "
        f"{summary.rows_out} rows returned, {summary.failed_items} items failed.",
        highlight=False,
    )
    if summary.output_file:
        console.print(f"Rows: {summary.output_file}", highlight=False)
