"""Real parts the tests need (Docker, Mosquitto, PostgreSQL, Chromium) and how a missing one is handled.

Locally a missing part skips its tests with the reason. In CI (``CI=true``) or with
``EDGESHIP_REQUIRE_PARTS=1`` a missing part fails them instead, so a broken CI
machine cannot turn into a green run that tested nothing.

Ports: :func:`free_port` and :func:`port_block` hand out ports from a space below the
kernel's ephemeral range (32768-60999 on Linux), split between pytest-xdist workers:
two workers never pick the same port before either binds it, a port picked ahead of
binding (an agent's ``port_range``, a hub or broker restarted on the same port) cannot
be taken meanwhile as the local end of some outgoing connection, and successive picks
move round the space, so a port is not handed out again soon after a test released it.
20000-20999 is left to ``edgeship demo``, which takes its first free block from 20000.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

__all__ = ["free_port", "need", "need_binary", "parts_required", "port_block", "worker_port_space"]

PORT_SPACE = (21000, 32768)  # [first, end) shared out among workers; below Linux's ephemeral ports


def parts_required() -> bool:
    return os.environ.get("EDGESHIP_REQUIRE_PARTS") == "1" or os.environ.get("CI", "").lower() == "true"


def need(available: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) unless ``available``; ``what`` says what is missing."""
    if available:
        return
    message = f"{what} is not available"
    if parts_required():
        pytest.fail(message + " (required: CI=true or EDGESHIP_REQUIRE_PARTS=1)", pytrace=False)
    pytest.skip(message)  # locally only: when parts are required (CI) need() fails above instead


def need_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    need(path is not None, f"the '{name}' program")
    assert path is not None
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, from this worker's space (:func:`port_block`)."""
    return port_block(1, host)


def worker_port_space() -> tuple[int, int]:
    """``[first, end)`` of this pytest-xdist worker's ports (``gw0``, ``gw1``, ...; the whole space without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    first, end = PORT_SPACE
    size = (end - first) // max(count, 1)
    return first + index * size, first + (index + 1) * size


# Offset in this worker's space where the next block starts, so successive blocks differ; it starts where the
# process id says, so pytest sessions run side by side on one machine (developers, not CI) rarely meet.
_cursor = [os.getpid() * 613]  # reduced modulo the space on use


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports in this worker's space that nothing listens on now.

    Blocks are handed out in turn round the space, so blocks taken one after another (the
    agents of a fleet, or a test after one that killed its agents) do not overlap until
    the space wraps around; a port in use then is skipped.
    """
    first, end = worker_port_space()
    size = end - first
    _cursor[0] %= size
    assert 0 < count <= size, f"a block of {count} ports does not fit in {first}-{end - 1}"
    for _ in range(size):
        if _cursor[0] + count > size:
            _cursor[0] = 0
        start = first + _cursor[0]
        _cursor[0] += count
        if all(_bindable(port, host) for port in range(start, start + count)):
            return start
    raise RuntimeError(f"no {count} consecutive free ports between {first} and {end - 1}")
