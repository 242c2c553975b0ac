"""``Fleet``: devices and what they tell the hub — tags, reported state, presence, telemetry — and direct methods.

Creating or re-tagging a device commits its re-evaluation intent with the change (the
store does), then drains it through :class:`~edgeship.hub.services.issuing.Issuing`, so the
device has its document before the call returns. Inbound device messages come from the
MQTT bridge's worker: each is validated here (``edgeship.reported``,
``edgeship.hub.telemetry``) and stored, the reports and the telemetry batches the worker
gathered each in one transaction (``record_reported_many``, ``record_telemetry_many``,
ADR 0052); an invalid one is an ``InputError`` the bridge counts and drops, alone.
Nothing here knows about HTTP or MQTT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeship.errors import EdgeshipError, InputError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.faults import AFTER_CHANGE_COMMIT, BEFORE_TELEMETRY_STORE, fault_point
from edgeship.hub.services.issuing import Issuing
from edgeship.hub.services.link import DeviceLink
from edgeship.hub.services.rollouts import Wakeup
from edgeship.hub.services.rules import check_method_call, check_tags, validate_device_id, validate_new_device_id
from edgeship.hub.services.trust import TrustRotation
from edgeship.hub.store import (
    DesiredRecord,
    DeviceRecord,
    HubStore,
    PresenceRecord,
    ReportedRecord,
    TelemetryRecord,
    TelemetryStore,
)
from edgeship.hub.telemetry import parse_telemetry
from edgeship.reported import parse_reported

__all__ = ["DeviceView", "Fleet"]


@dataclass(frozen=True)
class DeviceView:
    device: DeviceRecord
    desired: DesiredRecord | None
    reported: ReportedRecord | None
    presence: PresenceRecord | None = None


class Fleet:
    """The hub's devices; ``link`` carries direct methods and a deleted device's clean-up."""

    def __init__(
        self,
        store: HubStore,
        issuing: Issuing,
        trust: TrustRotation,
        link: DeviceLink,
        *,
        clock: Callable[[], datetime],
        wakeup: Wakeup | None = None,
    ) -> None:
        """``wakeup`` is set after reports are stored, so the rollout engine looks at them at once."""
        self.store = store
        self.issuing = issuing
        self.wakeup = wakeup
        self.trust = trust
        self.link = link
        self.clock = clock
        self.telemetry = TelemetryStore(store)

    # devices -----------------------------------------------------------------
    def create_device(self, device_id: str, tags: Mapping[str, Any] | None = None) -> DeviceView:
        validate_new_device_id(device_id)  # not a hub identity: the name becomes a broker login
        tags = dict(tags or {})
        check_tags(tags)
        self.store.add_device(device_id, tags, self.clock())  # with its re-evaluation intent
        fault_point(AFTER_CHANGE_COMMIT)
        self.trust.deliver_trust_root([device_id])
        self.issuing.drain_pending()
        return self.get_device(device_id)

    def create_devices(self, devices: Iterable[tuple[str, Mapping[str, Any] | None]]) -> int:
        """Create many devices at once (provisioning a fleet); each gets its first document. Returns the count.

        One insert and one batched re-evaluation instead of a transaction and a
        re-evaluation per device; all or none are created.
        """
        rows: list[tuple[str, dict[str, Any]]] = []
        for device_id, tags in devices:
            validate_new_device_id(device_id)
            tags = dict(tags or {})
            check_tags(tags)
            rows.append((device_id, tags))
        self.store.add_devices(rows, self.clock())  # with one re-evaluation intent for all of them
        fault_point(AFTER_CHANGE_COMMIT)
        self.trust.deliver_trust_root([device_id for device_id, _tags in rows])
        self.issuing.drain_pending()
        return len(rows)

    def update_tags(self, device_id: str, tags: Mapping[str, Any]) -> DeviceView:
        """Replace the device's tags (as IoT Hub's twin tags) and re-target it at once."""
        tags = dict(tags)
        check_tags(tags)
        self.store.set_tags(validate_device_id(device_id), tags)  # with its re-evaluation intent
        fault_point(AFTER_CHANGE_COMMIT)
        self.issuing.drain_pending()
        return self.get_device(device_id)

    def forget(self, device_id: str) -> None:
        """After a device was deleted (``edgeship.hub.credentials``): clear what the link retains for it."""
        self.link.forget(device_id)

    def get_device(self, device_id: str) -> DeviceView:
        device = self.store.get_device(validate_device_id(device_id))
        desired = self.store.latest_desired([device_id]).get(device_id)
        presence = self.telemetry.presence([device_id]).get(device_id)
        return DeviceView(device, desired, self.store.reported([device_id]).get(device_id), presence)

    def list_devices(self) -> list[DeviceView]:
        desired = self.store.latest_desired()
        reported = self.store.reported()
        presence = self.telemetry.presence()
        return [
            DeviceView(d, desired.get(d.id), reported.get(d.id), presence.get(d.id)) for d in self.store.list_devices()
        ]

    def device_ids(self) -> list[str]:
        return [d.id for d in self.store.list_devices()]

    # what devices send (the MQTT bridge's worker calls these) ----------------
    def record_reported(self, device_id: str, state: Mapping[str, Any]) -> ReportedRecord:
        """Store a device's reported state (the MQTT bridge calls this for ``.../reported``).

        Only a report that validates against ``edgeship.reported.ReportedState`` is stored
        (operators see it, the deployment status reads it); it is stored as received.
        """
        _check_report(device_id, state)
        record = self.store.put_reported(validate_device_id(device_id), dict(state), self.clock())
        if self.wakeup is not None:
            self.wakeup.set()
        return record

    def record_reported_many(
        self, items: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> tuple[list[ReportedRecord], list[tuple[str, str]]]:
        """:meth:`record_reported` for a batch, in one transaction: ``(stored, [(device id, why refused)])``.

        For the MQTT bridge's worker: reports that arrived since its last write go in
        together (one write per report cost about 1 ms on SQLite; a batch of 500 about
        20 ms). A report that fails ``edgeship.reported``'s schema, or an unknown device, is refused alone; the others
        are stored. A device reported twice keeps its last report.
        """
        accepted: list[tuple[str, dict[str, Any], datetime]] = []
        refused: list[tuple[str, str]] = []
        now = self.clock()
        for device_id, state in items:
            try:
                _check_report(device_id, state)
                accepted.append((validate_device_id(device_id), dict(state), now))
            except InputError as exc:
                refused.append((device_id, str(exc)))
        stored, unknown = self.store.put_reported_many(accepted)
        if stored and self.wakeup is not None:
            self.wakeup.set()
        refused.extend((device_id, f"No device {device_id!r} on the hub.") for device_id in unknown)
        return stored, refused

    def record_telemetry(self, device_id: str, batch: Mapping[str, Any]) -> TelemetryRecord | None:
        """Validate a telemetry batch (``edgeship.hub.telemetry``) and store its new samples, bounded per device.

        :meth:`record_telemetry_many` for one batch: an ``InputError`` when it is refused for its
        content (the device is told why), a ``HubNotFoundError`` for an unknown device.
        """
        (outcome,) = self.record_telemetry_many([(device_id, batch)])
        if isinstance(outcome, EdgeshipError):
            raise outcome
        return outcome

    def record_telemetry_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[TelemetryRecord | EdgeshipError | None]:
        """Validate telemetry batches and store their new samples in one transaction (``TelemetryStore.add_many``).

        For the MQTT bridge's worker: the batches that arrived since its last write go in together.
        Per item, in order: what was stored; None when every sample was already stored (same ``seq``
        and ``time``: a re-sent batch); or the error that refused it alone, the others being stored:
        an ``InputError`` for its content (the device is told why at once, ``telemetry-stored`` with
        ``refused``, so the agent stops sending it) or a ``HubNotFoundError`` for an unknown device
        (not told: it sends the batch again). Stored and duplicate batches are confirmed to their
        devices (ADR 0049) after the transaction committed; if it fails, none is, and the error is
        raised: their agents send them again.
        """
        outcomes: list[TelemetryRecord | EdgeshipError | None] = [None] * len(items)
        accepted: list[tuple[int, str, dict[str, Any]]] = []
        for i, (device_id, batch) in enumerate(items):
            try:
                try:
                    parsed = parse_telemetry(batch)
                    if parsed.device_id != device_id:
                        raise InputError(
                            f"Telemetry names device {parsed.device_id!r} but arrived for {device_id!r}; ignored.")
                except InputError as exc:
                    self._confirm_telemetry(device_id, batch, str(exc))
                    raise
                accepted.append((i, validate_device_id(device_id), dict(batch)))
            except InputError as exc:
                outcomes[i] = exc
        if not accepted:
            return outcomes
        fault_point(BEFORE_TELEMETRY_STORE)
        now = self.clock()
        stored, unknown = self.telemetry.add_many([(device_id, batch, now) for _, device_id, batch in accepted])
        for (i, device_id, batch), record in zip(accepted, stored, strict=True):
            if device_id in unknown:
                outcomes[i] = HubNotFoundError(f"No device {device_id!r} on the hub.")
                continue
            outcomes[i] = record
            self._confirm_telemetry(device_id, batch)
        return outcomes

    def _confirm_telemetry(self, device_id: str, batch: Any, refused: str | None = None) -> None:
        last = _last_seq(batch)
        if last is not None:
            self.link.confirm_telemetry(device_id, last, refused)

    def record_online(self, device_id: str, online: bool) -> PresenceRecord:
        """The device's retained ``online`` flag: ``True`` when it connects, ``False`` from its last will."""
        return self.telemetry.set_online(validate_device_id(device_id), bool(online), self.clock())

    def recent_telemetry(self, device_id: str, limit: int = 10) -> list[TelemetryRecord]:
        if not 1 <= limit <= 1000:
            raise InputError(f"limit {limit} must be between 1 and 1000.")
        return self.telemetry.recent(validate_device_id(device_id), limit)

    # direct methods ----------------------------------------------------------
    def invoke_method(
        self, device_id: str, method: str, args: Mapping[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Call a direct method on a device and return its answer ``{"status", "result"|"error"}``."""
        self.store.get_device(validate_device_id(device_id))  # HubNotFoundError for an unknown device
        check_method_call(method, args, timeout)
        return self.link.invoke(device_id, method, args, timeout)


def _last_seq(batch: Any) -> int | None:
    """A telemetry batch's highest sample ``seq`` (at least 1), read leniently: a refused batch is confirmed too."""
    samples = batch.get("samples") if isinstance(batch, Mapping) else None
    if not isinstance(samples, list):
        return None
    seqs = [sample.get("seq") for sample in samples if isinstance(sample, Mapping)]
    return max((q for q in seqs if isinstance(q, int) and not isinstance(q, bool) and q >= 1), default=None)


def _check_report(device_id: str, state: Any) -> None:
    if not isinstance(state, Mapping):
        raise InputError("Reported state must be a JSON object.")
    claimed = state.get("deviceId")
    if claimed is not None and claimed != device_id:
        raise InputError(f"Reported state names device {claimed!r} but arrived for {device_id!r}; ignored.")
    parse_reported(dict(state))
