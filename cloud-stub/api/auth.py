"""Operator Bearer tokens: random, shown once, stored only as their sha256.

A token is 32 random bytes, so an unsalted sha256 is enough (as GitHub stores
tokens): there is nothing to brute-force, and a lookup by digest does not leak
timing about the token's text. Devices do not use these tokens; they get
per-device MQTT credentials (a later slice).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone
from typing import Protocol

from edgeship.errors import EdgeshipError
from edgeship.hub.store import HubStore

__all__ = ["TOKEN_PREFIX", "AuthenticationError", "OperatorTokens", "TokenCheck", "create_token", "token_digest"]

TOKEN_PREFIX = "esh_"  # noqa: S105 - not a secret; makes a leaked token recognisable to secret scanners


class AuthenticationError(EdgeshipError):
    """The request carries no operator token, or one the hub does not know."""


class TokenCheck(Protocol):
    def check(self, token: str) -> str | None:
        """The token's name when it is valid, else ``None``."""
        ...


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: HubStore, name: str) -> str:
    """Create an operator token named ``name`` and return its text (the only time it is seen)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(name, token_digest(token), datetime.now(timezone.utc))
    return token


class OperatorTokens:
    """Checks Bearer tokens against the hub store's ``tokens`` table."""

    def __init__(self, store: HubStore) -> None:
        self.store = store

    def check(self, token: str) -> str | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        return self.store.token_name(token_digest(token))
