"""An in-memory trust world, after python-tuf's repository_simulator.

:class:`TrustWorld` holds Ed25519 keys per role, the current trust root and helpers
to sign documents, so every attack test is a few lines: build an envelope, tamper
with it, check the refusal. No files, no workspace.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from edgeship.signing import (
    MODULE_PAYLOAD_TYPE,
    Envelope,
    Signer,
    TrustRoot,
    sign_envelope,
    sign_trust_root,
)

MANIFEST = json.dumps({"name": "digits", "version": 1}).encode()


@dataclass
class TrustWorld:
    """Keys by role and a trust root made of them; thresholds are per role."""

    signers: dict[str, list[Signer]] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)
    version: int = 1

    @classmethod
    def make(cls, *, root: int = 1, release: int = 1, hub: int = 1, **thresholds: int) -> TrustWorld:
        world = cls()
        for role, count in (("root", root), ("release", release), ("hub", hub)):
            world.signers[role] = [Signer.generate(name=f"{role}-{i}", role=role) for i in range(count)]
            world.thresholds[role] = thresholds.get(f"{role}_threshold", 1)
        return world

    @property
    def root(self) -> TrustRoot:
        return TrustRoot.build(
            root=[s.public_key for s in self.signers["root"]],
            release=[s.public_key for s in self.signers["release"]],
            hub=[s.public_key for s in self.signers["hub"]],
            root_threshold=self.thresholds["root"],
            release_threshold=self.thresholds["release"],
            hub_threshold=self.thresholds["hub"],
            version=self.version,
        )

    def sign(self, role: str, payload: bytes = MANIFEST, payload_type: str = MODULE_PAYLOAD_TYPE) -> Envelope:
        return sign_envelope(payload, payload_type, self.signers[role])

    def signed_root(self, *extra: Signer) -> Envelope:
        return sign_trust_root(self.root, [*self.signers["root"], *extra])


def as_dict(envelope: Envelope) -> dict[str, Any]:
    return envelope.to_dict()


def flip_b64(text: str, index: int = 0) -> str:
    """Flip one bit of the ``index``-th decoded byte and re-encode."""
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()
