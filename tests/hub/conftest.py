"""Hub fixtures: a store URL for each backend (SQLite in a temp dir, a real PostgreSQL), and a HubWorld.

PostgreSQL comes from Debian's packages (``postgresql``, ``tests/postgres_server.py``): one
server per test session runs on a free port in a temp dir, and each test gets a fresh
database in it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session; each test takes a fresh database in it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty hub database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database()
