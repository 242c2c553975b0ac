"""The journal on its own: a record is the commit point, and rows that no longer match it are scored again."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.batch.journal import Journal, Outcome
from edgeship.errors import InputError

IDENTITY = {"input": "t.csv", "miniBatches": 3}


def test_a_record_whose_rows_were_lost_or_changed_is_dropped_so_the_mini_batch_is_scored_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "out")
    assert journal.open(IDENTITY) is False
    for index in range(3):
        journal.commit(Outcome(index, items=2, rows_out=2, attempts=1), f"row {index}a\nrow {index}b\n")
    journal.commit(Outcome(3, items=2, rows_out=0, attempts=3, error="ValueError: bad"), None)
    (journal.rows_dir / "1.txt").write_text("row 1a\n")  # cut short, as a power loss may leave it
    (journal.rows_dir / "2.txt").unlink()
    assert Journal(tmp_path / "out").open(IDENTITY) is True
    kept = journal.outcomes()
    assert sorted(kept) == [0, 3] and kept[3].failed_items == 2
    assert not (journal.done_dir / "1.json").exists()
    journal.assemble(tmp_path / "out" / "rows.txt", [0])
    assert (tmp_path / "out" / "rows.txt").read_text() == "row 0a\nrow 0b\n"


def test_a_folder_with_another_run_or_other_files_is_refused(tmp_path: Path) -> None:
    Journal(tmp_path / "out").open(IDENTITY)
    with pytest.raises(InputError, match="holds a run with a different miniBatches"):
        Journal(tmp_path / "out").open({**IDENTITY, "miniBatches": 4})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty and holds no batch run"):
        Journal(tmp_path / "other").open(IDENTITY)


def test_short_rows_count_against_the_threshold() -> None:
    assert Outcome(0, items=10, rows_out=7, attempts=1).failed_items == 3
    assert Outcome(0, items=10, rows_out=12, attempts=1).failed_items == 0
