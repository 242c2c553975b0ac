"""What a batch run works through: its input, split into numbered mini-batches.

Pure apart from reading the input's listing (a folder) or the table (a CSV or
Parquet file). A mini-batch is a list of file paths for a folder, a row range
``[start, stop)`` for a table. The split depends only on the input and the size,
so a resumed run finds the same mini-batches under the same numbers; the
:attr:`InputPlan.fingerprint` says when the input changed in between.

Sizes follow ParallelRunStep's ``mini_batch_size``: a number of files for a
folder; for a table a number of rows, or an approximate amount of data such as
``"1MB"`` or ``"512KB"`` (turned into rows by the table's average row size on disk).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgeship.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_MINI_BATCHES",
    "InputPlan",
    "MiniBatch",
    "MiniBatchSize",
    "parse_mini_batch_size",
    "plan_input",
    "read_table",
]

MAX_MINI_BATCHES = 1_000_000  # one journal entry each; more is a mistake in --mini-batch-size
TABLE_SUFFIXES = (".csv", ".parquet")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?b)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}

InputKind = Literal["files", "table"]


@dataclass(frozen=True)
class MiniBatchSize:
    """``count`` files or rows, or (tables only) about ``nbytes`` of data."""

    count: int | None = None
    nbytes: int | None = None

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.nbytes}B"


def parse_mini_batch_size(text: str) -> MiniBatchSize:
    """``"10"`` (files or rows), or ``"1MB"``/``"512KB"``/``"1GB"`` (tabular input only)."""
    match = _SIZE.fullmatch(str(text))
    if match is None or int(match.group(1)) < 1:
        raise InputError(
            f"--mini-batch-size {text!r} is not a size; give a whole number from 1 (files or rows) "
            "or an amount of data such as 1MB or 512KB (tabular input)."
        )
    number, unit = int(match.group(1)), (match.group(2) or "").lower() or None
    if unit is None:
        return MiniBatchSize(count=number)
    return MiniBatchSize(nbytes=number * _UNITS[unit])


@dataclass(frozen=True)
class MiniBatch:
    """Mini-batch ``index``: ``files`` (folder input) or rows ``[start, stop)`` (tabular input)."""

    index: int
    files: tuple[str, ...] = ()
    start: int = 0
    stop: int = 0

    @property
    def items(self) -> int:
        return len(self.files) if self.files else self.stop - self.start


@dataclass(frozen=True)
class InputPlan:
    kind: InputKind
    source: Path
    batches: tuple[MiniBatch, ...]
    fingerprint: str  # sha256 over what the split depends on: listing or table identity, and the size
    table: pd.DataFrame | None = None

    @property
    def total_items(self) -> int:
        return sum(b.items for b in self.batches)


def _fingerprint(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _check_count(count: int, what: str) -> None:
    if count > MAX_MINI_BATCHES:
        raise InputError(
            f"The input splits into {count} mini-batches, more than {MAX_MINI_BATCHES}; "
            f"give a larger --mini-batch-size ({what})."
        )


def _plan_folder(folder: Path, size: MiniBatchSize) -> InputPlan:
    if size.count is None:
        raise InputError(
            f"--mini-batch-size {size} is an amount of data; for a folder of files give a number of files, e.g. 10."
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"The input folder {folder} holds no files; give a folder of files to score.")
    _check_count(-(-len(files) // size.count), "files per mini-batch")
    paths = [str(p.resolve()) for p in files]
    batches = tuple(
        MiniBatch(index=i, files=tuple(paths[at : at + size.count]))
        for i, at in enumerate(range(0, len(paths), size.count))
    )
    listing = [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files]
    return InputPlan("files", folder, batches, _fingerprint({"files": listing, "size": str(size)}))


def read_table(path: Path) -> pd.DataFrame:
    """The whole table; a file pandas cannot read is an InputError naming it."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError, ImportError) as exc:  # pandas' parser errors are ValueErrors
        raise InputError(f"{path} cannot be read as a {path.suffix[1:].upper()} table ({exc}).") from exc


def _plan_table(path: Path, size: MiniBatchSize) -> InputPlan:
    table = read_table(path)
    rows = len(table)
    if rows == 0:
        raise InputError(f"The table {path} has no rows; give a table with at least one row to score.")
    stat = path.stat()
    if size.count is not None:
        per_batch = size.count
    else:
        assert size.nbytes is not None
        per_batch = max(1, int(size.nbytes // max(1.0, stat.st_size / rows)))
    _check_count(-(-rows // per_batch), "rows per mini-batch")
    batches = tuple(
        MiniBatch(index=i, start=at, stop=min(at + per_batch, rows)) for i, at in enumerate(range(0, rows, per_batch))
    )
    identity = {"table": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": rows}
    return InputPlan("table", path, batches, _fingerprint({**identity, "size": str(size)}), table)


def plan_input(source: Path, size: MiniBatchSize) -> InputPlan:
    """Split a folder of files, a ``.csv`` or a ``.parquet`` file into mini-batches."""
    source = source.expanduser()
    if source.is_dir():
        return _plan_folder(source.resolve(), size)
    if source.is_file():
        if source.suffix.lower() not in TABLE_SUFFIXES:
            raise InputError(
                f"--input {source} is neither a folder nor a .csv or .parquet table; "
                "give a folder of files or a table."
            )
        return _plan_table(source.resolve(), size)
    raise InputError(f"--input {source} does not exist; give a folder of files, a .csv or a .parquet file.")
