"""Fixtures shared by every test area: an initialised workspace and the CLI runner."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import parts`

from edgeship.workspace import Workspace

TESTS = Path(__file__).parent
DATA = TESTS / "data"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    ws = Workspace.at(tmp_path / "ws")
    ws.create()
    monkeypatch.setenv("EDGESHIP_HOME", str(ws.root))
    yield ws


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[object]:
    """A real Mosquitto on a free port (``.url``, ``.stop()``, ``.restart()``), stopped after the test."""
    from mosquitto import Mosquitto

    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()
