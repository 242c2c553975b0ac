"""Token rules as data: the role table, expiry parsing, token state; the token table on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from edgeship.errors import InputError
from edgeship.hub.api.auth import parse_expiry
from edgeship.hub.api.roles import permits
from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError
from edgeship.hub.store import HubStore, TokenStore
from edgeship.hub.store.tokens import TokenRecord, token_state

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
METHOD = "/devices/{device_id}/methods/{method}"


@pytest.mark.parametrize(("verb", "route", "params", "read_only_may"), [
    ("GET", "/devices", {}, True),
    ("HEAD", "/blobs/{digest}", {}, True),
    ("get", "/trust-root", {}, True),
    ("POST", METHOD, {"method": "logs"}, True),
    ("POST", METHOD, {"method": "restart"}, False),
    ("POST", METHOD, {"method": "reboot"}, False),  # a method added later stays closed until listed
    ("POST", "/devices", {}, False),
    ("PUT", "/devices/{device_id}/tags", {}, False),
    ("DELETE", "/deployments/{deployment_id}", {}, False),
    ("PUT", "/trust-root", {}, False),
    ("POST", "/devices/{device_id}/methods/logs", {}, False),  # only the method route's template counts
    ("PATCH", "/devices", {}, False),
])
def test_the_role_table(verb: str, route: str, params: dict[str, str], read_only_may: bool) -> None:
    assert permits("read-only", verb, route, params) is read_only_may
    assert permits("operator", verb, route, params) is True
    assert permits("admin", verb, route, params) is False  # an unknown role may do nothing


def test_expiry_is_a_duration_or_a_zoned_time() -> None:
    assert parse_expiry("30d", T0) == T0 + timedelta(days=30)
    assert parse_expiry(" 12h ", T0) == T0 + timedelta(hours=12)
    assert parse_expiry("2027-01-01T00:00:00Z", T0) == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert parse_expiry("2027-01-01T02:00:00+02:00", T0) == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert parse_expiry("2027-01-01T02:00:00+02:00", T0).tzinfo == timezone.utc
    for bad in ("30", "30m", "-1d", "0h", "2027-01-01", "2026-11-30T00:00:00Z", "tomorrow"):
        with pytest.raises(InputError, match="--expires"):
            parse_expiry(bad, T0)


def test_revoked_wins_and_a_token_expires_at_its_expiry_time() -> None:
    active = TokenRecord("t", "operator", T0, T0 + timedelta(hours=1), None, None)
    assert token_state(active, T0) == "active"
    assert token_state(active, T0 + timedelta(minutes=59, seconds=59)) == "active"
    assert token_state(active, T0 + timedelta(hours=1)) == "expired"
    revoked = TokenRecord("t", "operator", T0, T0 + timedelta(hours=1), T0, None)
    assert token_state(revoked, T0 + timedelta(hours=2)) == "revoked"
    assert token_state(TokenRecord("t", "read-only", T0, None, None, None), T0 + timedelta(days=9999)) == "active"


@pytest.fixture
def tokens(hub_url: str) -> Iterator[TokenStore]:
    store = HubStore(hub_url)
    yield TokenStore(store)
    store.close()


def test_the_token_table_keeps_roles_expiry_and_revocation(tokens: TokenStore) -> None:
    tokens.add("ops", "a" * 64, T0)
    tokens.add("dash", "b" * 64, T0, role="read-only", expires=T0 + timedelta(days=1))
    assert tokens.use("b" * 64, T0 + timedelta(hours=1)) == TokenRecord(
        "dash", "read-only", T0, T0 + timedelta(days=1), None, None
    )
    assert tokens.get("dash").last_used == T0 + timedelta(hours=1)
    assert tokens.use("c" * 64, T0) is None
    assert [t.name for t in tokens.list()] == ["dash", "ops"]

    record, changed = tokens.revoke("ops", T0 + timedelta(hours=2))
    assert changed and record.revoked_at == T0 + timedelta(hours=2)
    assert tokens.revoke("ops", T0 + timedelta(hours=3)) == (record, False)
    assert tokens.use("a" * 64, T0 + timedelta(hours=4)).revoked_at == record.revoked_at  # type: ignore[union-attr]
    assert tokens.get("ops").last_used is None  # a refused token is not "used"


def test_the_token_table_refuses_bad_tokens(tokens: TokenStore) -> None:
    tokens.add("ops", "a" * 64, T0)
    with pytest.raises(AlreadyExistsError, match="names are never reused"):
        tokens.add("ops", "d" * 64, T0)
    with pytest.raises(AlreadyExistsError):
        tokens.add("other", "a" * 64, T0)  # the same digest twice
    with pytest.raises(InputError, match="Unknown token role 'admin'"):
        tokens.add("x", "e" * 64, T0, role="admin")
    with pytest.raises(InputError, match="printable"):
        tokens.add("", "e" * 64, T0)
    with pytest.raises(InputError, match="before it is made"):
        tokens.add("x", "e" * 64, T0, expires=T0)
    with pytest.raises(HubNotFoundError, match="No token named 'ghost'"):
        tokens.revoke("ghost", T0)
