"""Fixtures for the serial provisioning tests: a noisy pty pair and a signed trust root."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pty_noise import NoisyPtyPair

from edgeship.signing import Signer, TrustRoot, sign_trust_root


@pytest.fixture
def ptys() -> Iterator[NoisyPtyPair]:
    pair = NoisyPtyPair()
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture(scope="session")
def trust_root_json() -> str:
    root, release, hub = (Signer.generate(role=r) for r in ("root", "release", "hub"))
    trust = TrustRoot.build(root=[root.public_key], release=[release.public_key], hub=[hub.public_key])
    return sign_trust_root(trust, [root]).to_json()


sys.path.insert(0, str(Path(__file__).parent.parent / "broker_security"))  # secure_broker: Mosquitto on our config
