"""A bounded on-disk FIFO of telemetry samples (SQLite), so telemetry survives offline time and restarts.

Each sample gets a sequence number that never repeats (``AUTOINCREMENT``), so the
hub can order and de-duplicate. When more than ``limit`` samples wait, the oldest
are dropped and counted; the count travels in the next batch (``dropped``) and is
cleared only when that batch was acknowledged. A batch leaves the queue only after
the broker acknowledged its publish (:meth:`ack`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

__all__ = ["Batch", "TelemetryQueue"]


class Batch:
    """Samples ``first_seq..last_seq`` and the drop count they carry, ready to publish."""

    def __init__(self, samples: list[dict[str, Any]], last_seq: int, dropped: int) -> None:
        self.samples = samples
        self.last_seq = last_seq
        self.dropped = dropped


class TelemetryQueue:
    def __init__(self, path: Path, limit: int = 10_000) -> None:
        self.limit = limit
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS samples (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped', 0)")

    def push(self, sample: dict[str, Any]) -> int:
        """Append ``sample`` (its ``seq`` is set here); drop the oldest beyond the limit. Returns the seq."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("INSERT INTO samples (body) VALUES ('')")
            seq = int(cursor.lastrowid or 0)
            self._db.execute("UPDATE samples SET body = ? WHERE seq = ?", (json.dumps({**sample, "seq": seq}), seq))
            (count,) = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()
            excess = count - self.limit
            if excess > 0:
                self._db.execute(
                    "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples ORDER BY seq LIMIT ?)", (excess,)
                )
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
            return seq

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    @property
    def dropped(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0])

    def peek(self, max_samples: int = 100) -> Batch | None:
        """The oldest samples (in order), or None when the queue is empty."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM samples ORDER BY seq LIMIT ?", (max_samples,)).fetchall()
            (dropped,) = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        if not rows:
            return None
        return Batch([json.loads(body) for _, body in rows], int(rows[-1][0]), int(dropped))

    def ack(self, batch: Batch) -> None:
        """The broker has the batch: remove its samples and the drops it reported."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM samples WHERE seq <= ?", (batch.last_seq,))
            self._db.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'dropped'", (batch.dropped,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
