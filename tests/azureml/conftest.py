"""The ``v1`` fixture: a workspace and a sample project folder per test file (:mod:`v1_world`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from v1_world import V1World, make_world


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V1World]:
    yield from make_world(tmp_path_factory)
