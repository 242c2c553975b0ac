"""``SigningKeys``: the hub's current trust root and the hub keys it signs with, shared under one lock.

Three services read them (issuing signs with the signers, the catalog verifies uploads
against the root's release keys, a rotation replaces both), so they live in one small
object passed to each at construction rather than on any one service.

Invariant: :attr:`lock` is held by a rotation from its check to its last re-signed
document, and by each issuing batch while it reads the signers. So two rotations run
one after the other (the second is checked against the root the first installed), and
no document is stored signed by a key a finished rotation dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from edgeship.errors import InputError
from edgeship.signing import SignerLike, TrustRoot

__all__ = ["SigningKeys"]


class SigningKeys:
    def __init__(self, trust_root: TrustRoot, signers: Sequence[SignerLike]) -> None:
        if not signers:
            raise InputError("The hub needs at least one 'hub' signing key to sign deployment documents.")
        self._root = trust_root
        self._signers = list(signers)
        self.lock = threading.RLock()

    @property
    def trust_root(self) -> TrustRoot:
        return self._root

    @property
    def signers(self) -> list[SignerLike]:
        """A copy, taken under the lock: a batch signs with the keys current when it starts."""
        with self.lock:
            return list(self._signers)

    def replace(self, trust_root: TrustRoot, signers: Sequence[SignerLike] | None = None) -> None:
        """Install a rotated root (and, when the hub key changed, its signers); callers hold :attr:`lock`."""
        with self.lock:
            self._root = trust_root
            if signers is not None:
                self._signers = list(signers)
