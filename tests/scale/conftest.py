"""Scale fixtures: one real PostgreSQL per test session and worker (``replicas.PostgresServer``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS / "scale", TESTS / "hub", TESTS.parent / "benchmarks" / "fleet"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from replicas import PostgresServer  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
