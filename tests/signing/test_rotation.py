"""Trust-root rotation: who may replace a trust root, and what the replacement changes."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
from trust_world import TrustWorld

from edgeship.errors import (
    BadSignatureError,
    PayloadTypeError,
    ThresholdError,
    TrustRootError,
    UnknownKeyError,
)
from edgeship.signing import (
    DEPLOYMENT_PAYLOAD_TYPE,
    MODULE_PAYLOAD_TYPE,
    Signer,
    TrustRoot,
    load_trust_root,
    rotate,
    sign_envelope,
    sign_trust_root,
    verify_envelope,
)


def _next(world: TrustWorld) -> TrustWorld:
    new = copy.deepcopy(world)
    new.version += 1
    return new


def test_first_root_loads_when_self_signed(world: TrustWorld) -> None:
    assert load_trust_root(world.signed_root().to_json()) == world.root


def test_first_root_signed_by_a_foreign_key_is_refused(world: TrustWorld) -> None:
    forged = sign_trust_root(world.root, [Signer.generate()])
    with pytest.raises(UnknownKeyError, match="not signed by its own root keys"):
        load_trust_root(forged)


def test_valid_rotation_replaces_the_hub_key(world: TrustWorld) -> None:
    new = _next(world)
    new.signers["hub"] = [Signer.generate(name="hub-2", role="hub")]
    rotated = rotate(world.root, new.signed_root())
    assert rotated.version == 2
    assert set(rotated.role("hub").keyids) == {new.signers["hub"][0].keyid}


def test_retired_hub_key_is_refused_after_rotation(world: TrustWorld) -> None:
    new = _next(world)
    new.signers["hub"] = [Signer.generate(name="hub-2", role="hub")]
    rotated = rotate(world.root, new.signed_root())
    old_doc = world.sign("hub", payload_type=DEPLOYMENT_PAYLOAD_TYPE)
    assert verify_envelope(old_doc, world.root, "hub", DEPLOYMENT_PAYLOAD_TYPE)
    with pytest.raises(UnknownKeyError, match="matches no trusted hub key"):
        verify_envelope(old_doc, rotated, "hub", DEPLOYMENT_PAYLOAD_TYPE)
    new_doc = new.sign("hub", payload_type=DEPLOYMENT_PAYLOAD_TYPE)
    assert verify_envelope(new_doc, rotated, "hub", DEPLOYMENT_PAYLOAD_TYPE)


def test_rotation_signed_by_a_non_root_key_is_refused(world: TrustWorld) -> None:
    new = _next(world)
    by_release = sign_trust_root(new.root, world.signers["release"])
    with pytest.raises(UnknownKeyError, match="not signed by the current root keys"):
        rotate(world.root, by_release)


def test_rotation_with_an_altered_payload_is_refused(world: TrustWorld) -> None:
    new = _next(world)
    env = new.signed_root()
    tampered = type(env)(
        env.payload_type, env.payload.replace(b'"version":2', b'"version":9'), env.signatures
    )
    with pytest.raises(BadSignatureError):
        rotate(world.root, tampered)


def test_rotation_to_the_same_version_is_refused(world: TrustWorld) -> None:
    with pytest.raises(TrustRootError, match="version 1, not above the current 1"):
        rotate(world.root, world.signed_root())


def test_rotation_to_a_lower_version_is_refused() -> None:
    world = TrustWorld.make()
    world.version = 5
    older = copy.deepcopy(world)
    older.version = 4
    with pytest.raises(TrustRootError, match="refusing a rollback"):
        rotate(world.root, older.signed_root())


def test_rotation_to_new_root_keys_needs_old_and_new_root_signatures(world: TrustWorld) -> None:
    new = _next(world)
    new.signers["root"] = [Signer.generate(name="root-new", role="root")]
    with pytest.raises(UnknownKeyError, match="current root keys"):
        rotate(world.root, new.signed_root())
    only_old = sign_trust_root(new.root, world.signers["root"])
    with pytest.raises(UnknownKeyError, match="its own root keys"):
        rotate(world.root, only_old)
    both = new.signed_root(*world.signers["root"])
    assert rotate(world.root, both).role("root").keyids == (new.signers["root"][0].keyid,)


def test_rotation_below_the_current_root_threshold_is_refused() -> None:
    world = TrustWorld.make(root=3, root_threshold=2)
    new = _next(world)
    one = sign_trust_root(new.root, world.signers["root"][:1])
    with pytest.raises(ThresholdError, match="root: 1 of 1 valid signatures, threshold 2"):
        rotate(world.root, one)
    assert rotate(world.root, sign_trust_root(new.root, world.signers["root"][:2])).version == 2


def test_raised_root_threshold_of_the_new_root_is_enforced_on_the_rotation(world: TrustWorld) -> None:
    new = _next(world)
    new.signers["root"] = [*world.signers["root"], Signer.generate(name="root-2", role="root")]
    new.thresholds["root"] = 2
    with pytest.raises(ThresholdError, match="its own root keys: root: 1 of 1 valid signatures, threshold 2"):
        rotate(world.root, sign_trust_root(new.root, world.signers["root"]))
    assert rotate(world.root, new.signed_root()).role("root").threshold == 2


def test_raised_release_threshold_is_enforced_after_rotation() -> None:
    world = TrustWorld.make(release=2)
    one = sign_envelope(b"{}", MODULE_PAYLOAD_TYPE, world.signers["release"][:1])
    assert verify_envelope(one, world.root, "release", MODULE_PAYLOAD_TYPE) == b"{}"
    new = _next(world)
    new.thresholds["release"] = 2
    rotated = rotate(world.root, new.signed_root())
    with pytest.raises(ThresholdError, match="1 of 1 valid signatures, threshold 2"):
        verify_envelope(one, rotated, "release", MODULE_PAYLOAD_TYPE)
    two = sign_envelope(b"{}", MODULE_PAYLOAD_TYPE, world.signers["release"])
    assert verify_envelope(two, rotated, "release", MODULE_PAYLOAD_TYPE) == b"{}"


def test_chained_rotations_each_need_the_previous_root(world: TrustWorld) -> None:
    v2 = _next(world)
    v2.signers["root"] = [Signer.generate(name="root-v2", role="root")]
    root2 = rotate(world.root, v2.signed_root(*world.signers["root"]))
    v3 = _next(v2)
    v3.signers["root"] = [Signer.generate(name="root-v3", role="root")]
    with pytest.raises(UnknownKeyError):
        rotate(root2, v3.signed_root(*world.signers["root"]))  # v1 keys no longer rule
    assert rotate(root2, v3.signed_root(*v2.signers["root"])).version == 3


def test_expired_new_root_is_refused_but_an_expired_current_root_can_rotate(world: TrustWorld) -> None:
    past = datetime(2020, 1, 1, tzinfo=timezone.utc)
    new = _next(world)
    stale = TrustRoot(version=2, keys=new.root.keys, roles=new.root.roles, expires=past)
    with pytest.raises(TrustRootError, match="already expired"):
        rotate(world.root, sign_trust_root(stale, world.signers["root"]))
    expired_current = TrustRoot(version=1, keys=world.root.keys, roles=world.root.roles, expires=past)
    assert rotate(expired_current, new.signed_root()).version == 2


def test_module_envelope_is_not_a_trust_root(world: TrustWorld) -> None:
    disguised = sign_envelope(
        _next(world).root.to_json().encode(), MODULE_PAYLOAD_TYPE, world.signers["root"]
    )
    with pytest.raises(PayloadTypeError, match="not a trust root"):
        rotate(world.root, disguised)
