"""Every way a signed document can be wrong, one short named test each (python-tuf style)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from trust_world import MANIFEST, TrustWorld, flip_b64

from edgeship.errors import (
    BadSignatureError,
    EnvelopeError,
    PayloadTypeError,
    ThresholdError,
    TrustRootError,
    UnknownKeyError,
)
from edgeship.signing import (
    DEPLOYMENT_PAYLOAD_TYPE,
    MODULE_PAYLOAD_TYPE,
    Envelope,
    Signer,
    countersign,
    sign_envelope,
    verify_envelope,
)


def test_valid_envelope_returns_the_payload(world: TrustWorld) -> None:
    assert verify_envelope(world.sign("release"), world.root, "release", MODULE_PAYLOAD_TYPE) == MANIFEST


def test_envelope_json_text_is_accepted_as_input(world: TrustWorld) -> None:
    text = world.sign("release").to_json()
    assert verify_envelope(text, world.root, "release", MODULE_PAYLOAD_TYPE) == MANIFEST
    assert verify_envelope(text.encode(), world.root, "release", MODULE_PAYLOAD_TYPE) == MANIFEST


def test_flipped_payload_byte_is_refused(world: TrustWorld) -> None:
    doc = world.sign("release").to_dict()
    doc["payload"] = flip_b64(doc["payload"], 3)
    with pytest.raises(BadSignatureError, match="0 of 1 valid signatures, threshold 1"):
        verify_envelope(json.dumps(doc), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_flipped_signature_byte_is_refused(world: TrustWorld) -> None:
    doc = world.sign("release").to_dict()
    doc["signatures"][0]["sig"] = flip_b64(doc["signatures"][0]["sig"], 10)
    with pytest.raises(BadSignatureError, match="does not verify"):
        verify_envelope(json.dumps(doc), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_truncated_signature_is_refused(world: TrustWorld) -> None:
    env = world.sign("release")
    short = Envelope(
        env.payload_type, env.payload, (type(env.signatures[0])(b"\x00" * 10, env.signatures[0].keyid),)
    )
    with pytest.raises(BadSignatureError):
        verify_envelope(short, world.root, "release", MODULE_PAYLOAD_TYPE)


def test_signature_by_unknown_key_is_refused(world: TrustWorld) -> None:
    stranger = sign_envelope(MANIFEST, MODULE_PAYLOAD_TYPE, [Signer.generate()])
    with pytest.raises(UnknownKeyError, match="unknown key"):
        verify_envelope(stranger, world.root, "release", MODULE_PAYLOAD_TYPE)


def test_hub_key_cannot_sign_a_module_manifest(world: TrustWorld) -> None:
    with pytest.raises(UnknownKeyError, match=r"a hub key\) matches no trusted release key"):
        verify_envelope(world.sign("hub"), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_unknown_key_lying_about_its_keyid_is_refused(world: TrustWorld) -> None:
    trusted_id = world.signers["release"][0].keyid
    forged = sign_envelope(MANIFEST, MODULE_PAYLOAD_TYPE, [Signer.generate()]).to_dict()
    forged["signatures"][0]["keyid"] = trusted_id
    with pytest.raises(BadSignatureError):
        verify_envelope(json.dumps(forged), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_below_threshold_is_refused_and_says_k_of_n() -> None:
    world = TrustWorld.make(release=3, release_threshold=2)
    one = sign_envelope(MANIFEST, MODULE_PAYLOAD_TYPE, world.signers["release"][:1])
    one = countersign(one, [Signer.generate()])
    with pytest.raises(ThresholdError, match="release: 1 of 2 valid signatures, threshold 2"):
        verify_envelope(one, world.root, "release", MODULE_PAYLOAD_TYPE)


def test_threshold_met_by_distinct_keys_is_accepted() -> None:
    world = TrustWorld.make(release=3, release_threshold=2)
    two = sign_envelope(MANIFEST, MODULE_PAYLOAD_TYPE, world.signers["release"][1:])
    assert verify_envelope(two, world.root, "release", MODULE_PAYLOAD_TYPE) == MANIFEST


def test_duplicate_signatures_from_one_key_count_once() -> None:
    world = TrustWorld.make(release=2, release_threshold=2)
    once = sign_envelope(MANIFEST, MODULE_PAYLOAD_TYPE, world.signers["release"][:1])
    twice = Envelope(once.payload_type, once.payload, once.signatures * 2)
    with pytest.raises(ThresholdError, match="1 of 2 valid signatures, threshold 2"):
        verify_envelope(twice, world.root, "release", MODULE_PAYLOAD_TYPE)


def test_duplicate_signature_under_another_keyid_counts_once() -> None:
    world = TrustWorld.make(release=2, release_threshold=2)
    once = sign_envelope(MANIFEST, MODULE_PAYLOAD_TYPE, world.signers["release"][:1])
    relabelled = type(once.signatures[0])(once.signatures[0].sig, None)
    with pytest.raises(ThresholdError, match="1 of 2"):
        verify_envelope(
            Envelope(once.payload_type, once.payload, (once.signatures[0], relabelled)),
            world.root,
            "release",
            MODULE_PAYLOAD_TYPE,
        )


def test_unsigned_envelope_is_refused(world: TrustWorld) -> None:
    with pytest.raises(ThresholdError, match="0 of 0 valid signatures, threshold 1"):
        verify_envelope(Envelope(MODULE_PAYLOAD_TYPE, MANIFEST), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_wrong_payload_type_is_refused(world: TrustWorld) -> None:
    deployment = world.sign("release", payload_type=DEPLOYMENT_PAYLOAD_TYPE)
    with pytest.raises(PayloadTypeError, match=r"expected .application/vnd\.edgeship\.module\+json."):
        verify_envelope(deployment, world.root, "release", MODULE_PAYLOAD_TYPE)


def test_payload_type_swapped_after_signing_is_refused(world: TrustWorld) -> None:
    """The type is inside the PAE: relabelling a deployment as a module breaks the signature."""
    doc = world.sign("release", payload_type=DEPLOYMENT_PAYLOAD_TYPE).to_dict()
    doc["payloadType"] = MODULE_PAYLOAD_TYPE
    with pytest.raises(BadSignatureError):
        verify_envelope(json.dumps(doc), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_malformed_base64_is_refused(world: TrustWorld) -> None:
    doc = world.sign("release").to_dict()
    doc["payload"] = doc["payload"][:-2] + "*="
    with pytest.raises(EnvelopeError, match="not valid base64"):
        verify_envelope(json.dumps(doc), world.root, "release", MODULE_PAYLOAD_TYPE)


def test_malformed_json_is_refused(world: TrustWorld) -> None:
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        verify_envelope(world.sign("release").to_json()[:-5], world.root, "release", MODULE_PAYLOAD_TYPE)


def test_expired_trust_root_is_refused(world: TrustWorld) -> None:
    root = world.root
    expired = type(root)(
        version=1, keys=root.keys, roles=root.roles, expires=datetime(2020, 1, 1, tzinfo=timezone.utc)
    )
    with pytest.raises(TrustRootError, match="expired at 2020-01-01T00:00:00Z"):
        verify_envelope(world.sign("release"), expired, "release", MODULE_PAYLOAD_TYPE)
    before = datetime(2019, 12, 31, tzinfo=timezone.utc) - timedelta(days=1)
    assert (
        verify_envelope(world.sign("release"), expired, "release", MODULE_PAYLOAD_TYPE, now=before)
        == MANIFEST
    )


def test_unknown_role_is_refused(world: TrustWorld) -> None:
    with pytest.raises(TrustRootError, match="Unknown role 'admin'"):
        verify_envelope(world.sign("release"), world.root, "admin", MODULE_PAYLOAD_TYPE)
