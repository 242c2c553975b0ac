"""Trust-root documents: the JSON format and the invariants every parse enforces."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from trust_world import TrustWorld

from edgeship.errors import TrustRootError
from edgeship.signing import Signer, TrustRoot


def _doc(world: TrustWorld) -> dict[str, Any]:
    return json.loads(world.root.to_json())


def test_json_round_trip_with_expiry(world: TrustWorld) -> None:
    root = world.root
    dated = TrustRoot(
        version=3, keys=root.keys, roles=root.roles, expires=datetime(2030, 5, 1, tzinfo=timezone.utc)
    )
    again = TrustRoot.from_json(dated.to_json())
    assert again == dated
    assert json.loads(dated.to_json())["expires"] == "2030-05-01T00:00:00Z"


def test_public_key_may_be_pem(world: TrustWorld) -> None:
    doc = _doc(world)
    signer = world.signers["release"][0]
    doc["keys"][signer.keyid]["public"] = signer.public_key.to_pem()
    assert TrustRoot.from_json(json.dumps(doc)) == world.root


def test_keyid_that_is_not_the_hash_of_its_key_is_refused(world: TrustWorld) -> None:
    """Otherwise one key listed under two ids would count twice toward a threshold."""
    doc = _doc(world)
    signer = world.signers["release"][0]
    alias = "0" * 64
    doc["keys"][alias] = doc["keys"][signer.keyid]
    doc["roles"]["release"] = {"keyids": [signer.keyid, alias], "threshold": 2}
    with pytest.raises(TrustRootError, match="sha256 of the raw public key"):
        TrustRoot.from_json(json.dumps(doc))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schemaVersion=2), "schemaVersion 2"),
        (lambda d: d.update(version=0), "'version' must be an integer"),
        (lambda d: d.update(version=True), "'version' must be an integer"),
        (lambda d: d["roles"].pop("hub"), "exactly root, release, hub"),
        (lambda d: d["roles"].update(admin=d["roles"]["hub"]), "exactly root, release, hub"),
        (lambda d: d["roles"]["release"].update(threshold=2), "threshold 2 with 1 keys"),
        (lambda d: d["roles"]["release"].update(threshold=0), "threshold 0"),
        (lambda d: d["roles"]["release"].update(keyids=["ab" * 32]), "which 'keys' lacks"),
        (lambda d: d["roles"]["release"].update(keyids=d["roles"]["release"]["keyids"] * 2), "twice"),
        (lambda d: d.update(expires="soon"), "not an ISO 8601 time"),
        (lambda d: d.update(expires="2030-01-01T00:00:00"), "no time zone"),
        (lambda d: next(iter(d["keys"].values())).update(keytype="rsa"), "only ed25519"),
        (lambda d: next(iter(d["keys"].values())).update(public="!!"), "neither PEM nor base64"),
    ],
)
def test_inconsistent_trust_root_is_refused(world: TrustWorld, change: Any, message: str) -> None:
    doc = _doc(world)
    change(doc)
    with pytest.raises(TrustRootError, match=message):
        TrustRoot.from_json(json.dumps(doc))


def test_build_collapses_a_key_listed_twice_in_one_role() -> None:
    key = Signer.generate().public_key
    root = TrustRoot.build(root=[key], release=[key, key], hub=[key])
    assert root.role("release").keyids == (key.keyid,)
    assert list(root.keys) == [key.keyid]


def test_trust_root_nested_past_the_recursion_limit_is_refused_not_a_crash() -> None:
    with pytest.raises(TrustRootError, match="not valid JSON"):
        TrustRoot.from_json(b"[" * 100_000)
