"""The agent's on-disk state under ``data_dir/state/``, every file written atomically.

::

    state/desired.dsse.json   the last accepted deployment envelope, byte for byte
    state/agent.json          last applied sequence, services (with digests and ports), active slots
    state/report-number.json  the last published report's number (``report_number.py``, not this class)

Why the agent keeps digests itself: a runtime reports a service's state and port
but not which signed build it runs, and the planner needs that to tell "converged"
from "update". A service is recorded *before* ``install`` begins (state
``installing``), so after a kill -9 at any point a half-installed slot is a
recorded service that is no module's active slot: an orphan, which the planner
stops and removes. ``active`` changes only at ``switch``.

On restart the cached envelope is verified again (signatures, expiry) before it
is applied; nothing here is trusted just because it is on disk, except the
sequence number, which only grows while the hub keys that signed it stay trusted
(``sequenceKeys``; ``edgeship.agent.decide.accept.replay_floor``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from edgeship.errors import ConfigError
from edgeship.fsutil import atomic_write_bytes, atomic_write_text
from edgeship.records import asdict, field, record, replace

__all__ = ["AgentState", "ServiceRecord", "StateStore"]

STATE_VERSION = 1


@record
class ServiceRecord:
    """One runtime service the agent created: which build it runs and on which port."""

    service: str
    module: str
    version: int
    module_digest: str
    lock_digest: str
    port: int | None = None
    # installing -> installed; only these two differ in what counts as built. "yielded": an installed
    # active slot the agent stopped to free its fixed port for the candidate (ADR 0011); if the switch
    # never completes (a kill), the next plan starts it again before retrying the update.
    phase: str = "installing"

    @property
    def built(self) -> bool:
        return self.phase in ("installed", "yielded")


@record
class AgentState:
    last_applied_sequence: int | None = None
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)  # module name -> service name
    sequence_keys: tuple[str, ...] | None = None  # hub key ids trusted when the sequence was recorded

    def to_json(self) -> str:
        data = {
            "stateVersion": STATE_VERSION,
            "lastAppliedSequence": self.last_applied_sequence,
            "services": {name: asdict(rec) for name, rec in sorted(self.services.items())},
            "active": dict(sorted(self.active.items())),
            "sequenceKeys": list(self.sequence_keys) if self.sequence_keys is not None else None,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> AgentState:
        try:
            data = json.loads(text)
            services = {name: ServiceRecord(**rec) for name, rec in data.get("services", {}).items()}
            sequence = data.get("lastAppliedSequence")
            keys = data.get("sequenceKeys")
            return cls(
                int(sequence) if sequence is not None else None, services, {str(k): str(v) for k, v in data.get(
                    "active", {}).items()}, tuple(str(k) for k in keys) if keys is not None else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"Agent state {source} is not readable ({exc}); move it away to start from an empty state."
            ) from exc


class StateStore:
    """Reads and writes the agent's state; one instance per agent, safe across its threads."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "state"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._state = self._load()

    @property
    def state_file(self) -> Path:
        return self.root / "agent.json"

    @property
    def desired_file(self) -> Path:
        return self.root / "desired.dsse.json"

    def _load(self) -> AgentState:
        if not self.state_file.is_file():
            return AgentState()
        return AgentState.from_json(self.state_file.read_text(encoding="utf-8"), self.state_file)

    @property
    def state(self) -> AgentState:
        with self._lock:
            return self._state

    def _save(self, state: AgentState) -> None:
        atomic_write_text(self.state_file, state.to_json(), mode=0o600)
        self._state = state

    # -- the accepted document ------------------------------------------------
    def cached_envelope(self) -> bytes | None:
        try:
            return self.desired_file.read_bytes()
        except FileNotFoundError:
            return None

    def accept(self, envelope: bytes, sequence: int, floor: int | None, hub_keys: tuple[str, ...]) -> None:
        """Record a newly accepted document: the envelope first, then the sequence.

        ``floor`` is the replay floor the document was checked against (``None`` when
        void, after a hub-key rotation); the sequence never drops below it, and is
        recorded with the hub keys trusted now.
        """
        with self._lock:
            atomic_write_bytes(self.desired_file, envelope, mode=0o600)
            self._save(replace(self._state, last_applied_sequence=max(sequence, floor or 0),
                               sequence_keys=tuple(sorted(hub_keys))))

    # -- services -------------------------------------------------------------
    def put_service(self, record: ServiceRecord) -> None:
        with self._lock:
            self._save(replace(self._state, services={**self._state.services, record.service: record}))

    def drop_service(self, service: str) -> None:
        with self._lock:
            services = {k: v for k, v in self._state.services.items() if k != service}
            active = {m: s for m, s in self._state.active.items() if s != service}
            self._save(replace(self._state, services=services, active=active))

    def set_active(self, module: str, service: str) -> None:
        with self._lock:
            self._save(replace(self._state, active={**self._state.active, module: service}))

    def to_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.state.to_json()))
