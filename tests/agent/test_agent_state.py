"""The agent's state on disk: atomic, reloadable, the sequence never goes down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeship.agent.state.store import ServiceRecord, StateStore
from edgeship.errors import ConfigError


def _record(name: str = "digits.a", phase: str = "installing") -> ServiceRecord:
    return ServiceRecord(name, "digits", 3, "sha256:" + "a" * 64, "sha256:" + "b" * 64, 5100, phase)


def test_state_survives_a_reopen(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.accept(b'{"envelope": 1}', 4, None, ("hub-key",))
    store.put_service(_record())
    store.put_service(_record(phase="installed"))
    store.set_active("digits", "digits.a")
    again = StateStore(tmp_path)
    assert again.state.last_applied_sequence == 4
    assert again.state.sequence_keys == ("hub-key",)
    assert again.state.services == {"digits.a": _record(phase="installed")}
    assert again.state.active == {"digits": "digits.a"}
    assert again.cached_envelope() == b'{"envelope": 1}'
    assert (tmp_path / "state" / "agent.json").stat().st_mode & 0o777 == 0o600


def test_the_applied_sequence_never_goes_down_and_dropping_a_service_clears_its_slot(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.accept(b"x", 7, None, ("k",))
    store.accept(b"y", 5, 7, ("k",))  # re-accepting an older cached document cannot lower the replay bound
    assert store.state.last_applied_sequence == 7
    store.put_service(_record())
    store.set_active("digits", "digits.a")
    store.drop_service("digits.a")
    assert store.state.services == {} and store.state.active == {}
    assert not list((tmp_path / "state").glob(".*"))  # no temp files left behind


def test_state_written_before_the_trust_split_keeps_its_floor_with_no_keys(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "agent.json").write_text(json.dumps({"stateVersion": 1, "lastAppliedSequence": 9}))
    store = StateStore(tmp_path)
    assert store.state.last_applied_sequence == 9 and store.state.sequence_keys is None


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "agent.json").write_text(json.dumps({"services": {"x": {"nope": 1}}}))
    with pytest.raises(ConfigError, match="move it away"):
        StateStore(tmp_path)
