"""Operator Bearer tokens: random, shown once, stored only as their sha256, each with a role and an expiry.

A token is 32 random bytes, so an unsalted sha256 is enough (as GitHub stores
tokens): there is nothing to brute-force, and a lookup by digest does not leak
timing about the token's text. Devices do not use these tokens; they have
per-device MQTT credentials.

Every request looks its token up again (no cache), so a revocation or an expiry
takes effect on the next request. What a role may do is :mod:`edgeship.hub.api.roles`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from edgeship.errors import EdgeshipError, InputError
from edgeship.hub.api.roles import READ_ONLY_DEVICE_METHODS, permits
from edgeship.hub.store import HubStore
from edgeship.hub.store.tokens import OPERATOR, TokenStore, token_state

__all__ = [
    "TOKEN_PREFIX",
    "AuthenticationError",
    "OperatorTokens",
    "PermissionDeniedError",
    "TokenCheck",
    "TokenExpiredError",
    "TokenGrant",
    "TokenRevokedError",
    "authorize",
    "create_token",
    "parse_expiry",
    "token_digest",
]

TOKEN_PREFIX = "esh_"  # noqa: S105 - not a secret; makes a leaked token recognisable to secret scanners
MAX_TOKEN_CHARS = 256


class AuthenticationError(EdgeshipError):
    """The request carries no operator token, or one the hub does not accept (401)."""


class TokenExpiredError(AuthenticationError):
    """The operator token was valid, but its expiry time has passed (401)."""


class TokenRevokedError(AuthenticationError):
    """The operator token was revoked with ``edgeship hub token revoke`` (401)."""


class PermissionDeniedError(EdgeshipError):
    """A valid operator token whose role does not allow this request (403)."""


@dataclass(frozen=True)
class TokenGrant:
    """Who is calling: the token's name and role, once the token has been accepted."""

    name: str
    role: str


class TokenCheck(Protocol):
    def check(self, token: str) -> TokenGrant:
        """The token's grant; raises :class:`AuthenticationError` (or a subclass) when it is not accepted."""
        ...


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: HubStore, name: str, *, role: str = OPERATOR, expires: datetime | None = None) -> str:
    """Create an operator token named ``name`` and return its text (the only time it is seen)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    TokenStore(store).add(name, token_digest(token), datetime.now(timezone.utc), role=role, expires=expires)
    return token


_DURATION = re.compile(r"(\d{1,6})([dh])")


def parse_expiry(text: str, now: datetime) -> datetime:
    """``30d`` / ``12h`` from ``now``, or an ISO 8601 time with its zone (``2027-01-01T00:00:00Z``), in UTC."""
    duration = _DURATION.fullmatch(text.strip())
    if duration:
        amount, unit = int(duration.group(1)), duration.group(2)
        if amount == 0:
            raise InputError(f"--expires {text!r} would expire at once; give a positive duration such as 30d.")
        return now + (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
    stamp = text.strip()
    try:
        when = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith(("Z", "z")) else stamp)
    except ValueError:
        raise InputError(
            f"Cannot read --expires {text!r}: give a duration (30d, 12h) or a time with its zone "
            "(2027-01-01T00:00:00Z)."
        ) from None
    if when.tzinfo is None:
        raise InputError(f"--expires {text!r} has no time zone; add Z for UTC or an offset such as +02:00.")
    if when <= now:
        raise InputError(f"--expires {text!r} is in the past; give a later time.")
    return when.astimezone(timezone.utc)


def authorize(grant: TokenGrant, verb: str, route: str, params: Mapping[str, str]) -> None:
    """Raise :class:`PermissionDeniedError` unless ``grant``'s role allows ``verb route``."""
    if permits(grant.role, verb, route, params):
        return
    reads = ", ".join(sorted(READ_ONLY_DEVICE_METHODS))
    raise PermissionDeniedError(
        f"The token {grant.name!r} has the {grant.role!r} role, which may read (GET) and call the {reads} method "
        f"but not {verb.upper()} {route}; use a token with the 'operator' role "
        "(edgeship hub token create NAME --role operator)."
    )


class OperatorTokens:
    """Checks Bearer tokens against the hub store's ``tokens`` table; ``clock`` is injected for tests."""

    def __init__(self, store: HubStore, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store = store
        self.tokens = TokenStore(store)
        self.clock = clock

    def check(self, token: str) -> TokenGrant:
        unknown = AuthenticationError(
            "The operator token is not valid on this hub; create one with 'edgeship hub token create NAME'."
        )
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            raise unknown
        now = self.clock()
        record = self.tokens.use(token_digest(token), now)
        if record is None:
            raise unknown
        state = token_state(record, now)
        if state == "revoked":
            assert record.revoked_at is not None
            raise TokenRevokedError(
                f"The operator token {record.name!r} was revoked at {record.revoked_at.isoformat()}; "
                "ask an operator for a new one ('edgeship hub token create')."
            )
        if state == "expired":
            assert record.expires is not None
            raise TokenExpiredError(
                f"The operator token {record.name!r} expired at {record.expires.isoformat()}; "
                "ask an operator for a new one ('edgeship hub token create NAME --expires 30d')."
            )
        return TokenGrant(record.name, record.role)
