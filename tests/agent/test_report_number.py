"""Each published report carries a ``reportNumber`` one above the last, kept in the state folder across restarts,
so the hub can order two reports of one document (ADR 0037, ninth session); an unchanged state sends nothing."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from parts import port_block
from parts_world import Device, Keys

from edgeship.agent.runtimes.process import ProcessRuntime
from edgeship.agent.state.report_number import FILE_NAME, MAX_REPORT_NUMBER, ReportNumbers
from edgeship.deployment import build_document, sign_document
from edgeship.reported import parse_reported

CLOCK = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
CLOCK_MS = 1_796_547_600_000  # CLOCK as unix time in milliseconds


def _document(keys: Keys, sequence: int) -> bytes:
    doc = build_document(device_id="dev-1", sequence=sequence, modules={}, issued_at=datetime.now(timezone.utc),
                         ttl=timedelta(days=1))  # fmt: skip
    return sign_document(doc, [keys.hub]).to_json().encode()


def _device(tmp_path: Path, keys: Keys) -> Device:
    return Device(tmp_path / "data", "http://127.0.0.1:9", keys, ProcessRuntime(tmp_path / "runtime"),
                  ports=(first := port_block(10), first + 9))  # fmt: skip


def test_each_published_report_is_numbered_one_above_the_last_and_an_unchanged_state_sends_none(
    tmp_path: Path,
) -> None:
    keys = Keys()
    device = _device(tmp_path, keys)
    reconciler = device.reconciler
    first = reconciler.reconcile()  # no document yet: a report of no modules
    assert first is not None
    start = first["reportNumber"]
    assert reconciler.reconcile() is None and reconciler.reconcile() is None  # nothing changed: nothing sent
    assert reconciler.offer(_document(keys, 1))
    assert reconciler.reconcile()["reportNumber"] == start + 1  # type: ignore[index]
    assert reconciler.offer(b'{"not": "a document"}')  # refused: a 400 report
    refused = reconciler.reconcile()
    assert refused is not None and refused["status"]["code"] == 400 and refused["reportNumber"] == start + 2
    assert reconciler.reconcile() is None
    assert [r["reportNumber"] for r in device.reports] == [start, start + 1, start + 2]
    assert all(parse_reported(json.loads(json.dumps(r))).report_number == r["reportNumber"] for r in device.reports)
    stored = json.loads((tmp_path / "data" / "state" / FILE_NAME).read_text())
    assert stored == {"reportNumber": start + 2}

    restarted = _device(tmp_path, keys)  # the agent restarted (or the device rebooted): same state folder
    restarted.reconciler.load_cached()
    again = restarted.reconciler.reconcile()
    assert again is not None and again["lastAppliedSequence"] == 1 and again["reportNumber"] == start + 3
    assert restarted.reconciler.reconcile() is None


def test_a_counter_with_no_file_starts_from_the_clock_in_milliseconds_and_counts_on_after_a_reopen(
    tmp_path: Path,
) -> None:
    numbers = ReportNumbers(tmp_path, lambda: CLOCK)
    assert [numbers.take(), numbers.take()] == [CLOCK_MS, CLOCK_MS + 1]
    later = ReportNumbers(tmp_path, lambda: CLOCK - timedelta(days=400))  # the clock went back: the file decides
    assert later.take() == CLOCK_MS + 2
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*"))  # no scratch left by the atomic writes


@pytest.mark.parametrize("content", ["{\"reportNumb", "[]", "{\"reportNumber\": \"7\"}", "{\"reportNumber\": true}",
                                     "{\"reportNumber\": 0}", f"{{\"reportNumber\": {MAX_REPORT_NUMBER + 1}}}",
                                     "\xff\xfe"])
def test_a_damaged_counter_file_is_logged_and_numbering_goes_on_from_the_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str,
) -> None:
    (tmp_path / FILE_NAME).write_bytes(content.encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="edgeship.agent"):
        numbers = ReportNumbers(tmp_path, lambda: CLOCK)
    assert f"report numbers: {tmp_path / FILE_NAME}" in caplog.text and "from the clock" in caplog.text
    assert numbers.take() == CLOCK_MS
    assert json.loads((tmp_path / FILE_NAME).read_text()) == {"reportNumber": CLOCK_MS}


def test_numbers_stop_at_2_53(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).write_text(json.dumps({"reportNumber": MAX_REPORT_NUMBER - 1}))
    numbers = ReportNumbers(tmp_path, lambda: CLOCK)
    with caplog.at_level(logging.WARNING, logger="edgeship.agent"):
        assert [numbers.take(), numbers.take(), numbers.take()] == [MAX_REPORT_NUMBER] * 3
    assert caplog.text.count("reached 2**53") == 1


def test_a_number_that_cannot_be_written_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).mkdir()  # where the file goes, a folder: reading and writing it fail
    with caplog.at_level(logging.WARNING, logger="edgeship.agent"):
        numbers = ReportNumbers(tmp_path, lambda: CLOCK)
        assert numbers.take() is None
    assert "cannot be read" in caplog.text and "this report goes without a number" in caplog.text
    (tmp_path / FILE_NAME).rmdir()
    assert numbers.take() == CLOCK_MS  # nothing was handed out: the next report takes the first number
