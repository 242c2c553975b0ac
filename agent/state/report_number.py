"""The number each published report carries (``reportNumber``), so the hub can order two reports of one document.

With several hub replicas a device's successive reports may be stored out of order (ADR 0037); the hub orders
them by ``(trustRootVersion, lastAppliedSequence)`` and, within one document, by this number. ``reportedAt``
cannot do that: it is the device's wall clock, which may go back. The number grows by one per published report
and never goes back, across restarts and reboots: the last one taken is kept in ``state/report-number.json``,
written atomically (``edgeship.fsutil``) *before* the report is published, so a kill between the two only skips a
number. A report is published only when it changed (``agent/reconcile.py``), so this is one small write per change.

A counter with no readable file (a new or wiped state folder, a file damaged by hand or by the disk) starts from
the wall clock in milliseconds, not from 1: the hub keeps a stored report over a lower-numbered one of the same
document, so a counter that started again from 1 after a wipe would have the device's reports of the document
it applies again ignored until its next document. A counter counts one per report, far slower than one per
millisecond, so the clock now is above every number an earlier life of the counter reached, provided the clock
is not behind where it was when that earlier life started (a device booting with an unset clock after a wipe can
still lose; its reports then order again from the next document on). An agent upgraded from one that sent no
number starts the same way; the hub's stored reports without a number are replaced as before.

Numbers stop at :data:`MAX_REPORT_NUMBER` (2**53, exact in every JSON reader): from there each report carries that
number, and the hub orders those as before, in the order it stores them. A report whose number cannot be written
(a full disk) goes out without one, which the hub also orders as before, rather than with a number a restart
could hand out again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edgeship.fsutil import atomic_write_text
from edgeship.reported_text import MAX_REPORT_NUMBER

__all__ = ["MAX_REPORT_NUMBER", "ReportNumbers"]

log = logging.getLogger("edgeship.agent")

FILE_NAME = "report-number.json"


class ReportNumbers:
    """The report numbers kept in ``folder`` (the agent's ``state/``); the reconcile loop's thread only."""

    def __init__(self, folder: Path, now: Callable[[], datetime]) -> None:
        self.path = Path(folder) / FILE_NAME
        self._now = now
        self._last = self._read()  # None: start from the clock at the first report

    def _read(self) -> int | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("report numbers: %s cannot be read (%s); numbering goes on from the clock", self.path, exc)
            return None
        try:
            number = json.loads(text)["reportNumber"]
        except (ValueError, TypeError, KeyError):
            number = None
        if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= MAX_REPORT_NUMBER:
            return number
        log.warning("report numbers: %s does not hold a number from 1 to 2**53; numbering goes on from the clock "
                    "in milliseconds", self.path)
        return None

    def take(self) -> int | None:
        """The next report's number, written down first; None when it could not be written (the report goes
        without one)."""
        if self._last is None:
            number = min(max(1, int(self._now().timestamp() * 1000)), MAX_REPORT_NUMBER)
        else:
            number = min(self._last + 1, MAX_REPORT_NUMBER)
            if number == self._last:
                return number  # at the cap: every report carries it, and the hub orders them as it stores them
            if number == MAX_REPORT_NUMBER:
                log.warning("report numbers reached 2**53; the hub orders this device's reports of one document "
                            "in the order it stores them from now on")
        try:
            atomic_write_text(self.path, json.dumps({"reportNumber": number}) + "\n", mode=0o600)
        except OSError as exc:
            log.warning("report numbers: %s could not be written (%s); this report goes without a number",
                        self.path, exc)
            return None
        self._last = number
        return number
