"""The generated ``mosquitto.conf`` keeps sessions and retained messages across restarts (ADR 0019).

What those settings buy on a real broker (a hub away, a clean stop, a SIGKILL) is counted
end to end in ``tests/hub/test_delivery_faults.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.errors import ConfigError
from edgeship.hub.broker import BrokerUser, MosquittoSettings, hash_password, write_broker_config
from edgeship.hub.broker.mosquitto import render_mosquitto_conf


def _conf(settings: MosquittoSettings, folder: Path) -> list[str]:
    return render_mosquitto_conf(settings, folder / "passwd", folder / "acl").splitlines()


def test_the_generated_config_persists_sessions_in_a_data_folder_beside_it_and_saves_every_30_s(
    tmp_path: Path,
) -> None:
    lines = _conf(MosquittoSettings(), tmp_path)
    assert "persistence true" in lines
    assert f"persistence_location {(tmp_path / 'data').resolve()}/" in lines
    assert "autosave_interval 30" in lines and "autosave_on_changes false" in lines
    assert "persistence false" not in lines


def test_a_chosen_persistence_folder_and_interval_are_written_and_persistence_can_be_turned_off(
    tmp_path: Path,
) -> None:
    lines = _conf(MosquittoSettings(persistence_dir=tmp_path / "db", autosave_interval=5), tmp_path)
    assert f"persistence_location {(tmp_path / 'db').resolve()}/" in lines and "autosave_interval 5" in lines
    off = _conf(MosquittoSettings(persistence=False), tmp_path)
    assert "persistence false" in off and not any(line.startswith("autosave") for line in off)


def test_an_autosave_interval_of_zero_is_refused_because_a_sigkill_would_then_lose_everything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1 second"):
        _conf(MosquittoSettings(autosave_interval=0), tmp_path)


def test_writing_the_config_creates_the_persistence_folder(tmp_path: Path) -> None:
    write_broker_config(tmp_path / "broker", [BrokerUser("hub", hash_password("pw"))],
                        MosquittoSettings(run_as="root"))  # fmt: skip
    assert (tmp_path / "broker" / "data").is_dir()
