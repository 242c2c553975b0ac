"""DSSE wire format: PAE bytes, envelope round trips, and interop with published vectors."""

from __future__ import annotations

import base64
import json

import pytest

from edgeship.errors import EnvelopeError, InputError
from edgeship.signing import (
    MODULE_PAYLOAD_TYPE,
    Envelope,
    Signer,
    TrustRoot,
    countersign,
    pae,
    sign_envelope,
    verify_envelope,
)

# RFC 8032 section 7.1, TEST 1 and TEST 2 (the keys the DSSE project's test vectors use).
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC_A = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SEED_B = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT = b'{"_type":"https://in-toto.io/Statement/v1"}'


def test_pae_matches_the_dsse_protocol_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_and_keeps_the_trailing_space_of_an_empty_body() -> None:
    assert (
        pae("application/vnd.ex\u00e4mple+json", b"") == b"DSSEv1 29 application/vnd.ex\xc3\xa4mple+json 0 "
    )
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_ed25519_matches_rfc8032_test_1() -> None:
    signer = Signer.from_seed(SEED_A)
    assert signer.public_key.raw == PUBLIC_A
    assert signer.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_signature_matches_the_dsse_single_signature_vector() -> None:
    """Byte-for-byte interop with secure-systems-lab/dsse testvectors (id single-signature)."""
    envelope = sign_envelope(STATEMENT, IN_TOTO, [Signer.from_seed(SEED_A)])
    assert base64.b64encode(envelope.signatures[0].sig).decode() == (
        "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
    )


def _vector_root() -> TrustRoot:
    a, b = Signer.from_seed(SEED_A).public_key, Signer.from_seed(SEED_B).public_key
    return TrustRoot.build(root=[a], release=[a, b], hub=[a], release_threshold=2)


def test_signatures_without_keyids_still_count_toward_the_threshold() -> None:
    """DSSE vector threshold-two-without-keyids: keyid is an optional hint."""
    signed = sign_envelope(STATEMENT, IN_TOTO, [Signer.from_seed(SEED_A), Signer.from_seed(SEED_B)])
    doc = signed.to_dict()
    for sig in doc["signatures"]:
        del sig["keyid"]
    assert verify_envelope(json.dumps(doc), _vector_root(), "release", IN_TOTO) == STATEMENT


def test_url_safe_base64_is_accepted() -> None:
    payload = b"\xfb\xff\xbf>?"  # encodes to "+/+/Pj8=" standard, "-_-_Pj8=" URL-safe
    doc = sign_envelope(payload, IN_TOTO, [Signer.from_seed(SEED_A), Signer.from_seed(SEED_B)]).to_dict()
    doc["payload"] = base64.urlsafe_b64encode(payload).decode()
    assert "-" in doc["payload"]
    for sig in doc["signatures"]:
        sig["sig"] = base64.urlsafe_b64encode(base64.b64decode(sig["sig"])).decode()
    assert verify_envelope(json.dumps(doc), _vector_root(), "release", IN_TOTO) == payload


def test_envelope_json_round_trip() -> None:
    signer = Signer.generate()
    envelope = sign_envelope(b"\x00binary\xff", MODULE_PAYLOAD_TYPE, [signer])
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert again.signatures[0].keyid == signer.keyid
    assert set(json.loads(envelope.to_json())) == {"payloadType", "payload", "signatures"}


def test_sign_envelope_signs_once_per_key_and_countersign_adds_new_keys() -> None:
    a, b = Signer.generate(), Signer.generate()
    envelope = sign_envelope(b"x", MODULE_PAYLOAD_TYPE, [a, a])
    assert len(envelope.signatures) == 1
    both = countersign(envelope, [a, b])
    assert [s.keyid for s in both.signatures] == [a.keyid, b.keyid]


def test_sign_envelope_without_signers_is_refused() -> None:
    with pytest.raises(InputError, match="at least one signing key"):
        sign_envelope(b"x", MODULE_PAYLOAD_TYPE, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),  # nested past the recursion limit: refused, not a RecursionError
        ("[]", "JSON object"),
        ('{"payload": "", "signatures": []}', "payloadType"),
        ('{"payloadType": "t", "payload": 1, "signatures": []}', "payload"),
        ('{"payloadType": "t", "payload": "", "signatures": {}}', "signatures"),
        ('{"payloadType": "t", "payload": "!!", "signatures": []}', "payload is not valid base64"),
        (
            '{"payloadType": "t", "payload": "", "signatures": [{"sig": "a b"}]}',
            "signature 1 is not valid base64",
        ),
        ('{"payloadType": "t", "payload": "", "signatures": [{"keyid": "k"}]}', "string 'sig'"),
        ('{"payloadType": "t", "payload": "", "signatures": [{"sig": "", "keyid": 7}]}', "keyid"),
        ('{"payloadType": "t", "payload": "", "payload": "", "signatures": []}', "repeats the key 'payload'"),
    ],
)
def test_malformed_envelope_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        Envelope.from_json(text)


def test_too_many_signatures_are_refused_before_any_verification() -> None:
    doc = {"payloadType": "t", "payload": "", "signatures": [{"sig": ""}] * 65}
    with pytest.raises(EnvelopeError, match="at most 64"):
        Envelope.from_json(json.dumps(doc))
