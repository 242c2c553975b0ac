"""A bounded on-disk FIFO of telemetry samples (a folder of files), so telemetry survives offline time and restarts.

Each sample gets a sequence number that never repeats, so the hub can order and
de-duplicate. When more than ``limit`` samples wait, the oldest are dropped and
counted; the count travels in the next batch (``dropped``) and is cleared only when
that batch was acknowledged. A batch leaves the queue only when it was acknowledged
(:meth:`ack`): by the hub's ``telemetry-stored`` once the hub has been seen to send
those, else by the broker's PUBACK (``sender.py``, ADR 0049). Whether the hub confirms
is kept here too (``hubConfirms``), so a restarted agent goes on waiting for the hub.

Layout of the queue's folder (ADR 0030: a folder of files instead of SQLite, which
cost the idle agent 1.5 MiB of its resident set)::

    queue.json                  {"nextSeq": N, "floor": F, "dropped": D, "hubConfirms": 0|1}
    00000000000000000042.json   one sample each, named by its seq

``queue.json`` is the commit point, written atomically (``edgeship.fsutil``) before any
sample file is written or removed: a sample whose seq is below ``floor`` is gone even if
its file is still there (a kill between the two steps; it is removed at the next open),
and ``nextSeq`` moves past a seq before its file exists, so a kill at any point neither
reuses a seq nor loses a count. A sample file that cannot be read (a power cut during
its write) is skipped and removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from edgeship.fsutil import atomic_write_bytes, sweep_scratch

__all__ = ["Batch", "TelemetryQueue"]

log = logging.getLogger("edgeship.agent")
_SAMPLE = re.compile(r"^(\d{20})\.json$")
_META = "queue.json"


class Batch:
    """Samples ``first_seq..last_seq`` and the drop count they carry, ready to publish."""

    def __init__(self, samples: list[dict[str, Any]], last_seq: int, dropped: int) -> None:
        self.samples = samples
        self.last_seq = last_seq
        self.dropped = dropped


class TelemetryQueue:
    """The queue kept in the folder ``path`` (created if missing)."""

    def __init__(self, path: Path, limit: int = 10_000) -> None:
        self.limit = limit
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        sweep_scratch(self.path)  # a write a killed agent left half-done
        self._lock = threading.Lock()
        meta = self._read_meta()
        self._floor = meta.get("floor", 1)
        self._dropped = meta.get("dropped", 0)
        self._hub_confirms = bool(meta.get("hubConfirms", 0))
        present = sorted(int(m[1]) for m in map(_SAMPLE.match, (p.name for p in self.path.iterdir())) if m)
        self._next = max([meta.get("nextSeq", 1), self._floor, *(s + 1 for s in present)])
        for seq in present:
            if seq < self._floor:
                self._file(seq).unlink(missing_ok=True)  # acked or dropped before a kill took the file
        self._seqs = [s for s in present if s >= self._floor]

    def _read_meta(self) -> dict[str, int]:
        try:
            meta = json.loads((self.path / _META).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("telemetry queue %s: %s is unreadable; counting on from the samples there", self.path, _META)
            return {}
        if not isinstance(meta, dict):
            return {}
        return {k: v for k, v in meta.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}

    def _file(self, seq: int) -> Path:
        return self.path / f"{seq:020d}.json"

    def _commit(self) -> None:
        meta = {"nextSeq": self._next, "floor": self._floor, "dropped": self._dropped,
                "hubConfirms": int(self._hub_confirms)}
        atomic_write_bytes(self.path / _META, json.dumps(meta).encode())

    def push(self, sample: dict[str, Any]) -> int:
        """Append ``sample`` (its ``seq`` is set here); drop the oldest beyond the limit. Returns the seq."""
        with self._lock:
            seq = self._next
            self._next += 1
            excess = len(self._seqs) + 1 - self.limit
            gone = self._seqs[:excess] if excess > 0 else []
            if gone:
                self._floor = gone[-1] + 1
                self._dropped += len(gone)
            self._commit()
            atomic_write_bytes(self._file(seq), json.dumps({**sample, "seq": seq}).encode())
            self._seqs = [*self._seqs[len(gone) :], seq]
            for old in gone:
                self._file(old).unlink(missing_ok=True)
            return seq

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    @property
    def hub_confirms(self) -> bool:
        """Whether batches wait for the hub's ``telemetry-stored`` (True) or only for the broker's PUBACK."""
        with self._lock:
            return self._hub_confirms

    def set_hub_confirms(self, confirms: bool) -> None:
        """Remember (on disk) whether the hub confirms what it stored."""
        with self._lock:
            if self._hub_confirms != confirms:
                self._hub_confirms = confirms
                self._commit()

    def peek(self, max_samples: int = 100) -> Batch | None:
        """The oldest samples (in order), or None when the queue is empty."""
        with self._lock:
            samples: list[dict[str, Any]] = []
            last = 0
            for seq in list(self._seqs[:max_samples]):
                try:
                    sample = json.loads(self._file(seq).read_bytes())
                except (OSError, ValueError):
                    log.warning("telemetry sample %d in %s is unreadable; skipping it", seq, self.path)
                    self._seqs.remove(seq)
                    with contextlib.suppress(OSError):
                        self._file(seq).unlink(missing_ok=True)
                    continue
                samples.append(sample)
                last = seq
            if not samples:
                return None
            return Batch(samples, last, self._dropped)

    def ack(self, batch: Batch) -> None:
        """The batch was delivered (or refused for good): remove its samples and the drops it reported."""
        with self._lock:
            self._floor = max(self._floor, batch.last_seq + 1)
            self._dropped = max(0, self._dropped - batch.dropped)
            self._commit()
            gone = [s for s in self._seqs if s <= batch.last_seq]
            self._seqs = self._seqs[len(gone) :]
            for seq in gone:
                self._file(seq).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing is held open; kept so the agent's shutdown reads the same for every part."""
