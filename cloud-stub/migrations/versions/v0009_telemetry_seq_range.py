"""Each telemetry row's lowest and highest sample ``seq``, indexed with the device (ADR 0052).

``TelemetryStore`` compares a new batch only with the kept batches whose seq range
overlaps its own, instead of reading every kept batch of the device. Two nullable
columns and one index; the rows already stored get their range here, read from their
JSON (samples were validated when stored, so each has an integer ``seq``). A row that
gets no range (no samples, or a ``seq`` beyond 64 bits) and the rows that hubs of
revision 0008 keep writing beside this one during an upgrade have NULL, which the store
treats as "always compare": never a duplicate missed, only a row read for nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PAGE = 1000  # rows read and updated at a time: a 10,000-device hub holds up to a million
_MAX_SEQ = 2**63 - 1

_telemetry = sa.table("telemetry", sa.column("id", sa.Integer()), sa.column("batch", sa.JSON()),
                      sa.column("seq_min", sa.BigInteger()), sa.column("seq_max", sa.BigInteger()))


def _range(batch: object) -> tuple[int, int] | tuple[None, None]:
    samples = batch.get("samples") if isinstance(batch, dict) else None
    seqs = [s.get("seq") if isinstance(s, dict) else None for s in samples] if isinstance(samples, list) else []
    valid = [q for q in seqs if isinstance(q, int) and not isinstance(q, bool) and 0 <= q <= _MAX_SEQ]
    if not valid or len(valid) < len(seqs):  # a sample it cannot place: the row is always compared
        return None, None
    return min(valid), max(valid)


def upgrade() -> None:
    op.add_column("telemetry", sa.Column("seq_min", sa.BigInteger(), nullable=True))
    op.add_column("telemetry", sa.Column("seq_max", sa.BigInteger(), nullable=True))
    op.create_index("ix_telemetry_device_seq", "telemetry", ["device_id", "seq_max", "seq_min"])
    conn = op.get_bind()
    after = -1
    while True:
        page = conn.execute(sa.select(_telemetry.c.id, _telemetry.c.batch).where(_telemetry.c.id > after)
                            .order_by(_telemetry.c.id).limit(_PAGE)).all()
        if not page:
            return
        ranges = [{"row": row_id, "lo": lo, "hi": hi} for row_id, batch in page for lo, hi in [_range(batch)]
                  if lo is not None]
        if ranges:
            conn.execute(_telemetry.update().where(_telemetry.c.id == sa.bindparam("row"))
                         .values(seq_min=sa.bindparam("lo"), seq_max=sa.bindparam("hi")), ranges)
        after = page[-1][0]


def downgrade() -> None:
    op.drop_index("ix_telemetry_device_seq", table_name="telemetry")
    with op.batch_alter_table("telemetry") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("seq_max")
        batch.drop_column("seq_min")
