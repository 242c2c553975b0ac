"""The agent's Ed25519 verifier (OpenSSL through ``ssl``'s libcrypto) answers as ``cryptography`` does.

A corpus of good signatures, tampered ones, non-canonical encodings, small-order and
malformed keys, and wrong lengths goes to both; every answer must match, and the
RFC 8032 vectors must hold.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parts import need

from edgeship.signing.ed25519 import PublicKey, _verify_with_cryptography
from edgeship.signing.ossl import verifier

L = 2**252 + 27742317777372353535851937790883648493  # the group order
P = 2**255 - 19
SMALL_ORDER = [  # encodings of points of order 1, 2, 4 and 8 (and non-canonical ones)
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]
RFC8032_1 = (
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "",
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _with_s(signature: bytes, s: int) -> bytes:
    return signature[:32] + (s % 2**256).to_bytes(32, "little")


def _corpus() -> list[tuple[str, bytes, bytes, bytes]]:
    cases: list[tuple[str, bytes, bytes, bytes]] = []
    for seed in range(4):
        key = Ed25519PrivateKey.from_private_bytes(bytes([seed + 1]) * 32)
        public = _raw(key)
        for message in (b"", b"a deployment document", bytes(range(256)) * 4):
            signature = key.sign(message)
            s = int.from_bytes(signature[32:], "little")
            cases += [
                ("good", public, signature, message),
                ("message changed", public, signature, message + b"x"),
                ("R bit flipped", public, bytes([signature[0] ^ 1]) + signature[1:], message),
                ("S bit flipped", public, signature[:40] + bytes([signature[40] ^ 4]) + signature[41:], message),
                ("S + L (malleable)", public, _with_s(signature, s + L), message),
                ("S = L", public, _with_s(signature, L), message),
                ("S high bit", public, signature[:63] + bytes([signature[63] | 0x80]), message),
                ("short", public, signature[:63], message),
                ("long", public, signature + b"\0", message),
                ("empty", public, b"", message),
                ("key bit flipped", bytes([public[0] ^ 1]) + public[1:], signature, message),
                ("key short", public[:31], signature, message),
                ("key y >= p", (P + 1).to_bytes(32, "little"), signature, message),
            ]
            cases += [(f"small-order key {i}", bytes.fromhex(k), signature, message) for i, k in enumerate(SMALL_ORDER)]
            cases += [("zero signature", public, bytes(64), message)]
            cases += [(f"small-order R {i}", public, bytes.fromhex(k) + signature[32:], message)
                      for i, k in enumerate(SMALL_ORDER)]  # fmt: skip
    for i, k in enumerate(SMALL_ORDER):  # a small-order key with an identity R and S = 0 "signs" everything
        identity_r = bytes.fromhex(SMALL_ORDER[0]) + bytes(32)
        cases.append((f"small-order key {i}, identity R, S=0", bytes.fromhex(k), identity_r, b"anything"))
    return cases


@pytest.fixture
def check() -> object:
    found = verifier()
    # locally a Python whose _ssl exports no libcrypto EVP functions skips (cryptography is used instead); CI fails
    need(found is not None, "libcrypto's EVP functions through this Python's _ssl")
    return found


def test_the_libcrypto_verifier_agrees_with_cryptography_on_every_case(check: object) -> None:
    disagreements = []
    for name, public, signature, message in _corpus():
        ours = check(public, signature, message)  # type: ignore[operator]
        theirs = _verify_with_cryptography(public, signature, message)
        if ours != theirs:
            disagreements.append((name, public.hex(), ours, theirs))
    assert disagreements == []
    assert sum(1 for c in _corpus() if c[0] == "good") == 12


def test_rfc8032_vector_1_verifies_and_a_changed_one_does_not() -> None:
    public, message, signature = (bytes.fromhex(x) for x in RFC8032_1)
    key = PublicKey(public)
    assert key.verify(signature, message)
    assert not key.verify(signature, b"\0")
    assert not key.verify(signature[:-1] + bytes([signature[-1] ^ 1]), message)


def test_a_failed_verification_leaves_tls_working() -> None:
    """A refused signature leaves nothing on OpenSSL's error queue for ``ssl`` to misreport."""
    import ssl

    key = PublicKey(bytes.fromhex(RFC8032_1[0]))
    assert not key.verify(bytes(64), b"x")
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLError, match="cadata does not contain a certificate"):
        context.load_verify_locations(cadata="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_verifying_a_trust_root_and_a_document_loads_no_cryptography() -> None:
    code = (
        "import sys\n"
        "from edgeship.signing import PublicKey, verify_envelope, TrustRoot, Envelope\n"
        "k = PublicKey(bytes.fromhex(sys.argv[1]))\n"
        "assert k.verify(bytes.fromhex(sys.argv[2]), b'')\n"
        "PublicKey.from_pem(k.to_pem())\n"
        "print('cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, RFC8032_1[0], RFC8032_1[2]], capture_output=True, text=True,
                         check=True)  # fmt: skip
    expected = "True" if verifier() is None else "False"
    assert out.stdout.strip() == expected
