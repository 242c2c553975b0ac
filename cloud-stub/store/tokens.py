"""Operator tokens in the hub database: role, expiry, revocation, last use; never the token's text.

A row is found by the token's sha256 (:mod:`edgeship.hub.api.auth` makes and hashes
tokens). Revoking keeps the row, so ``hub token list`` still shows who had access and
a revoked name cannot be handed out again by mistake. Whether a token may be used now
is :func:`token_state`, a pure function of the record and the time.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select

from edgeship.errors import InputError
from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError
from edgeship.hub.store.models import TokenRow
from edgeship.hub.store.store import HubStore

__all__ = ["OPERATOR", "READ_ONLY", "ROLES", "TOUCH_EVERY", "TokenRecord", "TokenState", "TokenStore", "token_state"]

OPERATOR = "operator"
READ_ONLY = "read-only"
ROLES = (OPERATOR, READ_ONLY)
TOUCH_EVERY = timedelta(minutes=1)  # last_used is written at most this often per token (a write per request is not)
MAX_NAME = 128  # characters, the column's width

TokenState = Literal["active", "expired", "revoked"]


@dataclass(frozen=True)
class TokenRecord:
    name: str
    role: str
    created: datetime
    expires: datetime | None
    revoked_at: datetime | None
    last_used: datetime | None


def token_state(record: TokenRecord, now: datetime) -> TokenState:
    """``revoked`` wins over ``expired``; a token expires at ``expires`` itself (not a second later)."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires is not None and now >= record.expires:
        return "expired"
    return "active"


def _named(row: TokenRow | None, name: str) -> TokenRow:
    if row is None:
        raise HubNotFoundError(f"No token named {name!r} on this hub; 'edgeship hub token list' shows the names.")
    return row


def _record(row: TokenRow) -> TokenRecord:
    return TokenRecord(row.name, row.role, row.created, row.expires, row.revoked_at, row.last_used)


class TokenStore:
    """The ``tokens`` table over a :class:`HubStore`'s engine (same transactions, same errors)."""

    def __init__(self, store: HubStore) -> None:
        self.store = store

    def add(
        self, name: str, digest: str, created: datetime, *, role: str = OPERATOR, expires: datetime | None = None
    ) -> TokenRecord:
        if role not in ROLES:
            raise InputError(f"Unknown token role {role!r}; use one of: {', '.join(ROLES)}.")
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise InputError(f"A token name is 1 to {MAX_NAME} printable characters; got {name!r}.")
        if expires is not None and expires <= created:
            raise InputError(f"The token would expire ({expires.isoformat()}) before it is made; give a later time.")
        with self.store._tx() as s:
            existing = s.get(TokenRow, name)
            if existing is not None:
                revoked = " (revoked)" if existing.revoked_at is not None else ""
                raise AlreadyExistsError(
                    f"A token named {name!r} exists already{revoked}; names are never reused, pick another one."
                )
            row = TokenRow(name=name, digest=digest, created=created, role=role, expires=expires)
            s.add(row)
            s.flush()
            return _record(row)

    def use(self, digest: str, now: datetime) -> TokenRecord | None:
        """The token whose sha256 is ``digest`` (``None``: unknown), noting ``now`` as its last use when active.

        The note is written only when the stored one is older than :data:`TOUCH_EVERY`, so
        a busy dashboard does not turn every read into a database write.
        """
        with self.store._tx() as s:
            row = s.scalars(select(TokenRow).where(TokenRow.digest == digest)).first()
            if row is None:
                return None
            record = _record(row)
            if token_state(record, now) == "active" and (row.last_used is None or now - row.last_used >= TOUCH_EVERY):
                row.last_used = now
            return record

    def get(self, name: str) -> TokenRecord:
        with self.store._tx() as s:
            return _record(_named(s.get(TokenRow, name), name))

    def list(self) -> builtins.list[TokenRecord]:
        with self.store._tx() as s:
            return [_record(row) for row in s.scalars(select(TokenRow).order_by(TokenRow.created, TokenRow.name))]

    def revoke(self, name: str, now: datetime) -> tuple[TokenRecord, bool]:
        """Revoke the token named ``name``: ``(record, True)``, or ``(record, False)`` when it was revoked already."""
        with self.store._tx() as s:
            row = _named(s.get(TokenRow, name), name)
            if row.revoked_at is not None:
                return _record(row), False
            row.revoked_at = now
            s.flush()
            return _record(row), True
