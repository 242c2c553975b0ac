"""Telemetry history per device, module and module version: what a rollout's health gates compare.

The telemetry table keeps a device's newest batches as sent; this table keeps, for each
``(device, module, version)``, one row per :data:`BUCKET` of the samples' own ``time``
(the device's clock, UTC) with the samples, requests, server errors (5xx), client
errors (4xx) and ``p99_weighted`` = sum of requests * p99 over the samples in it. A window's
p99 is estimated as ``sum(p99_weighted) / sum(requests)``: the request-weighted mean of the
samples' p99, not the p99 of all their requests (the histograms are not kept). It lies
between the smallest and the largest sample p99, is exact when the samples are alike, and
reads a tail concentrated in one sample lower than it is; between two versions of one
module on one device, measured the same way, it compares like with like.

Rows are written by :func:`record` inside :meth:`TelemetryStore.add_many`'s transaction,
from the samples that transaction stores: a re-sent sample is dropped there, so it is
counted once here too (and, as there, a re-send older than the kept batches counts
again). Only module entries of schemaVersion 2 that name their version and split their
errors are recorded.

Bounds (per device, whatever it sends): each version keeps its newest
:data:`KEEP_BUCKETS` buckets, each module its :data:`KEEP_VERSIONS` most recently
measured versions, each device its :data:`KEEP_SERIES` most recently measured
``(module, version)`` pairs; so at most ``KEEP_SERIES * KEEP_BUCKETS`` rows per device.
A version's rows stay until newer data pushes them out, not for a fixed time, so the
version a release replaced keeps its last hours however long a rollout is paused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, and_, delete, func, or_, select, tuple_
from sqlalchemy.orm import Mapped, Session, mapped_column

from edgeship.hub.store.engine import StoreBase
from edgeship.hub.store.models import Base

__all__ = [
    "BUCKET",
    "KEEP_BUCKETS",
    "KEEP_SERIES",
    "KEEP_VERSIONS",
    "Aggregate",
    "HistoryRow",
    "TelemetryHistory",
    "bucket_of",
    "record",
]

# One minute: a soak window is minutes to hours, and one row per minute per running version
# keeps a device's history small; a window's edges are resolved to the bucket (below).
BUCKET = timedelta(minutes=1)
# Six hours of a version's minutes: longer than a rollout's soak of a wave, and 30-minute
# baselines fit twelve times over. 360 rows of ~100 bytes per version and device.
KEEP_BUCKETS = 360
# The running version, the one it replaced, and one more (a rollback to an older one).
KEEP_VERSIONS = 3
# (module, version) pairs per device: five modules in the middle of an update each, so a
# device costs at most 16 x 360 rows whatever module names it makes up.
KEEP_SERIES = 16
_CHUNK = 200  # devices per query: under SQLite's 999 bound parameters with four per device
_MAX_INT = 2**63 - 1  # BIGINT

_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


class HistoryRow(Base):
    """One bucket of one module version's telemetry on one device (``first``/``last``: its samples' times)."""

    __tablename__ = "telemetry_history"
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    module: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    first: Mapped[datetime]
    last: Mapped[datetime]
    samples: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger)
    server_errors: Mapped[int] = mapped_column(BigInteger)
    client_errors: Mapped[int] = mapped_column(BigInteger)
    p99_weighted: Mapped[float] = mapped_column(Float)  # sum of requests * p99 ms


@dataclass(frozen=True)
class Aggregate:
    """A module version's telemetry on one device over a window."""

    samples: int  # telemetry samples in the window that measured this module version
    requests: int
    server_errors: int  # 5xx
    client_errors: int  # 4xx
    p99_ms: float | None  # request-weighted mean of the samples' p99; None without requests

    @property
    def error_rate(self) -> float | None:
        """Server errors per request (callers' bad input is not the release's fault); None without requests."""
        return self.server_errors / self.requests if self.requests else None


@dataclass
class _Bucket:
    first: datetime
    last: datetime
    samples: int = 0
    requests: int = 0
    server_errors: int = 0
    client_errors: int = 0
    p99_weighted: float = 0.0


def bucket_of(when: datetime) -> datetime:
    """The start of the bucket holding ``when`` (aware, UTC)."""
    when = when.astimezone(timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return when - (when - epoch) % BUCKET


def record(session: Session, device_id: str, samples: Sequence[dict[str, Any]]) -> None:
    """Add validated samples (``edgeship.hub.telemetry``) to the device's history, in the caller's transaction.

    The caller holds the device row's lock (``TelemetryStore.add_many``), so no other writer
    touches this device's rows meanwhile.
    """
    buckets = _group(samples)
    if not buckets:
        return
    keys = sorted(buckets)
    stored = {
        (r.module, r.version, r.bucket): r
        for r in session.scalars(select(HistoryRow).where(
            HistoryRow.device_id == device_id,
            tuple_(HistoryRow.module, HistoryRow.version).in_(sorted({(m, v) for m, v, _ in keys})),
            HistoryRow.bucket.in_(sorted({start for _, _, start in keys})),
        ))
    }
    grown: set[tuple[str, int]] = set()
    for key in keys:
        add = buckets[key]
        row = stored.get(key)
        if row is None:
            module, version, start = key
            session.add(HistoryRow(device_id=device_id, module=module, version=version, bucket=start,
                                   first=add.first, last=add.last, samples=add.samples, requests=add.requests,
                                   server_errors=add.server_errors, client_errors=add.client_errors,
                                   p99_weighted=add.p99_weighted))
            grown.add((module, version))
            continue
        row.first, row.last = min(row.first, add.first), max(row.last, add.last)
        row.samples = min(row.samples + add.samples, 2**31 - 1)
        row.requests = min(row.requests + add.requests, _MAX_INT)
        row.server_errors = min(row.server_errors + add.server_errors, _MAX_INT)
        row.client_errors = min(row.client_errors + add.client_errors, _MAX_INT)
        row.p99_weighted += add.p99_weighted
    if grown:
        session.flush()
        _prune(session, device_id, grown)


def _group(samples: Sequence[dict[str, Any]]) -> dict[tuple[str, int, datetime], _Bucket]:
    buckets: dict[tuple[str, int, datetime], _Bucket] = {}
    for sample in samples:
        entries = sample.get("modules") or {}
        measured = [(name, e) for name, e in entries.items()
                    if isinstance(e, dict) and isinstance(e.get("version"), int) and "serverErrors" in e]
        if not measured:
            continue
        when = _TIME.validate_python(sample["time"])
        when = when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)  # the agent sends "Z"
        try:
            when = when.astimezone(timezone.utc)
            start = bucket_of(when)
        except OverflowError:  # a time at the very edge of the calendar: stored as telemetry, not history
            continue
        for name, entry in measured:
            b = buckets.setdefault((name, entry["version"], start), _Bucket(first=when, last=when))
            requests = int(entry["requests"])
            b.first, b.last = min(b.first, when), max(b.last, when)
            b.samples += 1
            b.requests += requests
            b.server_errors += int(entry["serverErrors"])
            b.client_errors += int(entry["clientErrors"])
            b.p99_weighted += requests * float(entry["latencyMs"]["p99"])
    return buckets


def _prune(session: Session, device_id: str, grown: set[tuple[str, int]]) -> None:
    """Apply the bounds after new buckets: per version, then per module, then per device."""
    h = HistoryRow
    for module, version in sorted(grown):
        cutoff = session.scalars(
            select(h.bucket).where(h.device_id == device_id, h.module == module, h.version == version)
            .order_by(h.bucket.desc()).offset(KEEP_BUCKETS).limit(1)
        ).first()
        if cutoff is not None:
            session.execute(delete(h).where(h.device_id == device_id, h.module == module, h.version == version,
                                            h.bucket <= cutoff))
    series = session.execute(
        select(h.module, h.version, func.max(h.bucket).label("newest"), func.max(h.last).label("latest"))
        .where(h.device_id == device_id).group_by(h.module, h.version)
    ).all()
    newest_first = sorted(series, key=lambda r: (r.newest, r.latest, r.version), reverse=True)
    drop: set[tuple[str, int]] = {(r.module, r.version) for r in newest_first[KEEP_SERIES:]}
    per_module: dict[str, int] = {}
    for r in newest_first:
        per_module[r.module] = per_module.get(r.module, 0) + 1
        if per_module[r.module] > KEEP_VERSIONS:
            drop.add((r.module, r.version))
    if drop:
        session.execute(delete(h).where(h.device_id == device_id, tuple_(h.module, h.version).in_(sorted(drop))))


class TelemetryHistory:
    """Read a module version's telemetry per device: over a window, and for the version it replaced."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store

    def window(self, module: str, version: int, device_ids: Iterable[str], since: datetime,
               until: datetime | None = None) -> dict[str, Aggregate]:
        """Per device that has data for ``module`` ``version`` in ``[since, until)`` (``until`` None: no end).

        At bucket resolution: a bucket counts whole when its samples reach into the window
        (its last sample at or after ``since``, its first before ``until``).
        """
        _aware(since, until)
        h = HistoryRow
        found: dict[str, Aggregate] = {}
        with self.store._tx() as s:
            for chunk in _chunks(device_ids):
                query = _sums(h.device_id).where(h.module == module, h.version == version,
                                                 h.device_id.in_(chunk), h.last >= since)
                if until is not None:
                    query = query.where(h.first < until)
                found.update(_aggregates(s.execute(query.group_by(h.device_id))))
        return found

    def baseline(self, module: str, version: int, device_ids: Iterable[str],
                 span: timedelta = timedelta(minutes=30)) -> dict[str, Aggregate]:
        """Per device: the version of ``module`` it was measured running before ``version``, over its last ``span``.

        That is the newest other version with a bucket that began before the device's first
        sample of ``version`` (any, if it has none yet), aggregated over its buckets that
        began before that sample and within ``span`` of its newest such bucket's end.
        Devices without such a version are left out.
        """
        if span <= timedelta(0):
            raise ValueError(f"span {span} must be positive")
        h = HistoryRow
        found: dict[str, Aggregate] = {}
        with self.store._tx() as s:
            for chunk in _chunks(device_ids):
                started = dict(s.execute(  # device -> its first sample of `version`
                    select(h.device_id, func.min(h.first)).where(h.module == module, h.version == version,
                                                                 h.device_id.in_(chunk)).group_by(h.device_id)
                ).all())
                before: dict[str, tuple[datetime, datetime, int]] = {}  # device -> (newest bucket, last, version)
                for device, other, newest, last in s.execute(
                    select(h.device_id, h.version, func.max(h.bucket), func.max(h.last))
                    .where(h.module == module, h.version != version, h.device_id.in_(chunk),
                           _started_before(started, chunk))
                    .group_by(h.device_id, h.version)
                ):
                    if device not in before or (newest, last, other) > before[device]:
                        before[device] = (newest, last, other)
                if not before:
                    continue
                clauses = [
                    and_(h.device_id == device, h.version == other, h.bucket >= _span_start(newest, span),
                         *((h.first < started[device],) if device in started else ()))
                    for device, (newest, _, other) in before.items()
                ]
                found.update(_aggregates(s.execute(
                    _sums(h.device_id).where(h.module == module, or_(*clauses)).group_by(h.device_id))))
        return found


def _started_before(started: dict[str, datetime], chunk: list[str]) -> Any:
    """Rows that began before the device's first sample of the release (every row where it has none)."""
    h = HistoryRow
    waiting = [d for d in chunk if d not in started]
    clauses = [and_(h.device_id == d, h.first < t) for d, t in started.items()]
    if waiting:
        clauses.append(h.device_id.in_(waiting))
    return or_(*clauses)


def _sums(*group: Any) -> Any:
    h = HistoryRow
    return select(*group, func.sum(h.samples), func.sum(h.requests), func.sum(h.server_errors),
                  func.sum(h.client_errors), func.sum(h.p99_weighted))


def _aggregates(rows: Any) -> Iterator[tuple[str, Aggregate]]:
    for device, samples, requests, server, client, weighted in rows:
        requests = int(requests or 0)
        yield device, Aggregate(
            samples=int(samples or 0), requests=requests, server_errors=int(server or 0),
            client_errors=int(client or 0), p99_ms=float(weighted or 0.0) / requests if requests else None,
        )


def _chunks(device_ids: Iterable[str]) -> Iterator[list[str]]:
    ids = sorted(set(device_ids))
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def _span_start(newest: datetime, span: timedelta) -> datetime:
    """The first bucket of the ``span`` that ends with bucket ``newest`` (a device clock may sit at year 1 or 9999)."""
    try:
        return newest - (span - BUCKET)
    except OverflowError:
        return datetime.min.replace(tzinfo=timezone.utc) if span > BUCKET else newest


def _aware(*times: datetime | None) -> None:
    for t in times:
        if t is not None and t.tzinfo is None:
            raise ValueError("the telemetry history takes aware datetimes only (pass tzinfo=timezone.utc)")
