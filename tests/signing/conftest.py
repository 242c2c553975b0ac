"""Fixtures for the signing tests: a fresh in-memory trust world per test."""

from __future__ import annotations

import pytest
from trust_world import TrustWorld


@pytest.fixture
def world() -> TrustWorld:
    return TrustWorld.make()
