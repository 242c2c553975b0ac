"""Hub fixtures: a store URL for each backend (SQLite in a temp dir, a real PostgreSQL), and the REST API served.

``world`` (a HubWorld), ``service`` (its services on SQLite) and ``base_url`` (the REST API on uvicorn in a
thread, ``rest_server.serving``) are for the API tests; a test file that needs another kind defines its own.

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

from hub_world import HubWorld
from postgres_server import PostgresServer
from rest_server import serving

from edgeship.hub.api import OperatorTokens, create_app
from edgeship.hub.services import HubServices


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


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path / "hub")


@pytest.fixture
def service(world: HubWorld) -> HubServices:
    world.root.mkdir(parents=True)
    return world.services(f"sqlite:///{world.root / 'hub.db'}")


@pytest.fixture
def base_url(service: HubServices) -> Iterator[str]:
    with serving(create_app(service, OperatorTokens(service.store))) as url:
        yield url
