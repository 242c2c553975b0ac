"""Devices: the rows re-evaluation reads and the changes that call for it (each with its outbox intent)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, insert, select, type_coerce

from edgeship.hub.errors import AlreadyExistsError
from edgeship.hub.store.engine import StoreBase, need
from edgeship.hub.store.models import Base, DeviceRow
from edgeship.hub.store.outbox import record_intent
from edgeship.hub.store.records import DeviceRecord, device_record

__all__ = ["DeviceTables"]


class DeviceTables(StoreBase):
    """``devices``: add (one or many), re-tag, read. Adding and re-tagging commit a re-evaluation intent."""

    def add_device(self, device_id: str, tags: dict[str, Any], created: datetime) -> DeviceRecord:
        with self._tx() as s:
            if s.get(DeviceRow, device_id) is not None:
                raise AlreadyExistsError(f"Device {device_id!r} exists already; update its tags instead.")
            row = DeviceRow(id=device_id, tags=tags, created=created, last_sequence=0)
            s.add(row)
            s.flush()
            record_intent(s, "device created", [device_id], when=created)
            return device_record(row)

    def add_devices(self, devices: Sequence[tuple[str, dict[str, Any]]], created: datetime) -> None:
        """Add many devices in one transaction (one INSERT); any id that exists already fails them all."""
        ids = [device_id for device_id, _tags in devices]
        if len(set(ids)) != len(ids):
            raise AlreadyExistsError("The devices to add name one id twice; give each device once.")
        with self._tx() as s:
            taken = s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(ids)).limit(1)).first()
            if taken is not None:
                raise AlreadyExistsError(f"Device {taken!r} exists already; update its tags instead.")
            if devices:
                s.execute(insert(Base.metadata.tables["devices"]), [
                    {"id": device_id, "tags": tags, "created": created, "last_sequence": 0}
                    for device_id, tags in devices
                ])
                record_intent(s, "devices created", ids, when=created)

    def set_tags(self, device_id: str, tags: dict[str, Any]) -> DeviceRecord:
        with self._tx() as s:
            row = need(s.get(DeviceRow, device_id), f"device {device_id!r}")
            row.tags = tags
            s.flush()
            record_intent(s, "tags changed", [device_id])
            return device_record(row)

    def get_device(self, device_id: str) -> DeviceRecord:
        with self._tx() as s:
            return device_record(need(s.get(DeviceRow, device_id), f"device {device_id!r}"))

    def device_tags(self, ids: Iterable[str] | None = None) -> builtins.list[tuple[str, dict[str, Any], int]]:
        """``(id, tags, last sequence)`` of each device (of ``ids``, or all), by id: what re-evaluation reads.

        Devices that share their tags share one parsed dict (parsed once per distinct
        text), so callers must not change it.
        """
        query = select(DeviceRow.id, type_coerce(DeviceRow.tags, Text), DeviceRow.last_sequence).order_by(DeviceRow.id)
        if ids is not None:
            query = query.where(DeviceRow.id.in_(builtins.list(ids)))
        parsed: dict[str, dict[str, Any]] = {}
        out: builtins.list[tuple[str, dict[str, Any], int]] = []
        with self._tx() as s:
            for device_id, raw, counter in s.execute(query):
                if isinstance(raw, str):  # SQLite: the JSON text
                    tags = parsed.get(raw)
                    if tags is None:
                        tags = parsed[raw] = dict(json.loads(raw) or {})
                else:  # PostgreSQL's driver parses json itself
                    tags = dict(raw or {})
                out.append((device_id, tags, counter))
        return out

    def list_devices(self, ids: Iterable[str] | None = None) -> builtins.list[DeviceRecord]:
        # Columns, not ORM entities: re-evaluation reads every device, and identity-map bookkeeping
        # was a third of its cost at 10,000 devices.
        query = select(DeviceRow.id, DeviceRow.tags, DeviceRow.created, DeviceRow.last_sequence).order_by(DeviceRow.id)
        if ids is not None:
            query = query.where(DeviceRow.id.in_(builtins.list(ids)))
        with self._tx() as s:
            return [DeviceRecord(r.id, dict(r.tags or {}), r.created, r.last_sequence) for r in s.execute(query)]
