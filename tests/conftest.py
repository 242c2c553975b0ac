"""Fixtures shared by every test area (an initialised workspace, a Mosquitto), and how the suite runs in parallel.

The suite runs on pytest-xdist workers (``-n 2 --dist loadgroup`` in pyproject.toml's
addopts; ``-n 0`` runs it in one process). :func:`pytest_collection_modifyitems` puts
each test file in an xdist group of its own, so a file's module-scoped fixtures (a
fleet of real agents) are built once, on one worker; every test that makes a Docker
container goes into one group, :data:`DOCKER_GROUP`, because the agent's Docker runtime
removes containers with its labels that it did not record (one agent per engine) and
the workers share one engine. Groups start slowest first (:data:`SLOW_FIRST`), so the
last ones to start are short and the workers finish close together. Ports a test
chooses ahead of time come from the worker's own space (``parts.port_block``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import parts`

from edgeship.workspace import Workspace

TESTS = Path(__file__).parent
DATA = TESTS / "data"

DOCKER_GROUP = "docker"
# Files whose tests start containers (the agent with runtime = "docker", DockerRuntime, image builds);
# a test marked @pytest.mark.docker joins the group wherever it is.
DOCKER_FILES = (
    "agent/test_agent_docker.py",
    "agent/test_agent_kill_points_docker.py",
    "agent/test_runtime_contract.py",
    "packager/test_digits_image_e2e.py",
    "packager/test_image.py",
)
# Groups by what they took on 2 workers (seconds, docs/testing.md); the rest start after them in file order.
SLOW_FIRST = (
    "e2e/test_rollouts.py",
    "e2e/test_health_gates.py",
    DOCKER_GROUP,
)


def _group(item: pytest.Item) -> str:
    path = item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else str(item.path)
    if path in DOCKER_FILES or item.get_closest_marker("docker") is not None:
        return DOCKER_GROUP
    return path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    groups = {id(item): _group(item) for item in items}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[id(item)]))
    items.sort(key=lambda item: rank.get(groups[id(item)], len(rank)))  # stable: file order otherwise


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
