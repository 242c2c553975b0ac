"""Fixtures shared by every test area (an initialised workspace, a Mosquitto), and how the suite runs in parallel.

The suite runs on pytest-xdist workers (``-n 2 --dist loadgroup`` in pyproject.toml's
addopts; ``-n 0`` runs it in one process). :func:`pytest_xdist_make_scheduler` hands
out whole groups: a test file is a group of its own, so its module-scoped fixtures (a
fleet of real agents) are built once and its tests run in order on one worker, and
every file that makes Docker containers is in one group, :data:`DOCKER_GROUP`,
because the agent's Docker runtime removes containers with its labels that it did not
record (one agent per engine) and the workers share one engine. Groups start slowest
first (:data:`SLOW_FIRST`), so the last ones to start are short and the workers finish
close together. Ports a test chooses ahead of time come from the worker's own space
(``parts.port_block``). docs/testing.md has the why and the times.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import parts`

from edgeship.workspace import Workspace

TESTS = Path(__file__).parent
DATA = TESTS / "data"

DOCKER_GROUP = "docker"
# Files whose tests start containers (the agent with runtime = "docker", DockerRuntime, image builds).
DOCKER_FILES = frozenset({
    "tests/agent/test_agent_docker.py",
    "tests/agent/test_agent_kill_points_docker.py",
    "tests/agent/test_agent_parts_docker.py",
    "tests/agent/test_runtime_contract.py",
    "tests/packager/test_digits_image_e2e.py",
    "tests/packager/test_image.py",
    "tests/profiling/test_profile_docker.py",
})
# The longest groups (minutes on 2 busy workers, docs/testing.md), started first in this order; then file order.
SLOW_FIRST = ("tests/e2e/test_rollouts.py", "tests/e2e/test_health_gates.py", DOCKER_GROUP)


def xdist_group_of(nodeid: str) -> str:
    """The group a test runs in: its file, or :data:`DOCKER_GROUP`."""
    path = nodeid.split("::", 1)[0]
    return DOCKER_GROUP if path in DOCKER_FILES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole groups to a worker, for ``--dist loadgroup`` or ``loadfile`` (other modes keep xdist's scheduler).

    xdist's own loadgroup reads ``xdist_group`` marks by rewriting node ids, which pytest
    9.2 no longer lets a plugin do: every test went to either worker, Docker tests too.
    """
    if config.getvalue("dist") not in ("loadgroup", "loadfile"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    for item in items:
        if item.get_closest_marker("docker") and xdist_group_of(item.nodeid) != DOCKER_GROUP:
            raise pytest.UsageError(f"{item.nodeid} needs Docker: add its file to DOCKER_FILES in tests/conftest.py")
    # Stable: file order otherwise. xdist keeps this order with --no-loadscope-reorder (addopts).
    items.sort(key=lambda item: rank.get(xdist_group_of(item.nodeid), len(rank)))


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
