"""Real parts the tests need (Docker, Mosquitto, PostgreSQL, Chromium) and how a missing one is handled.

Locally a missing part skips its tests with the reason. In CI (``CI=true``) or with
``EDGESHIP_REQUIRE_PARTS=1`` a missing part fails them instead, so a broken CI
machine cannot turn into a green run that tested nothing.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

__all__ = ["free_port", "need", "need_binary", "parts_required"]


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
