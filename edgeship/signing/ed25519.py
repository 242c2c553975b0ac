"""Ed25519 keys in memory: public keys with their key ids, and signers.

No file-system access here (the workspace key store is :mod:`edgeship.signing.keys`),
so the agent can verify with nothing but a trust root in memory.

Key id
    ``keyid = sha256(raw 32-byte Ed25519 public key).hexdigest()`` (64 lowercase hex
    characters). The id is derived from the key material, never chosen, so one key
    cannot appear under two ids and be counted twice toward a threshold; trust roots
    are checked for this (:mod:`edgeship.signing.trust`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING

from edgeship.errors import SigningKeyError
from edgeship.records import field, record

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["KEYTYPE", "PublicKey", "Signer", "keyid_of"]

KEYTYPE = "ed25519"
_RAW_PUBLIC_LEN = 32
# SubjectPublicKeyInfo of an Ed25519 key (RFC 8410) is this DER prefix and the 32 raw bytes.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def keyid_of(raw_public: bytes) -> str:
    """The edgeship key id of a raw Ed25519 public key: its sha256 in lowercase hex."""
    return hashlib.sha256(raw_public).hexdigest()


@record
class PublicKey:
    """An Ed25519 public key and its derived key id. Equality is by key material."""

    raw: bytes
    keyid: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.raw) != _RAW_PUBLIC_LEN:
            raise SigningKeyError(
                f"An Ed25519 public key is {_RAW_PUBLIC_LEN} bytes, got {len(self.raw)}; "
                "export it again with 'edgeship keys export-public'."
            )
        object.__setattr__(self, "keyid", keyid_of(self.raw))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> PublicKey:
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        raw = _ed25519_spki(data)
        if raw is not None:  # the common case, read without cryptography (the agent does not load it)
            return cls(raw)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"Not a PEM public key: {exc}.") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"Only Ed25519 keys are supported, got {type(key).__name__}.")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Parse the ``public`` field of a trust root: PEM, or base64 of the 32 raw bytes."""
        if text.lstrip().startswith("-----BEGIN"):
            return cls.from_pem(text)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SigningKeyError("A public key is neither PEM nor base64 of 32 raw bytes.") from exc
        return cls(raw)

    def to_base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def to_pem(self) -> str:
        body = base64.encodebytes(_SPKI_PREFIX + self.raw).decode("ascii")
        return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature of ``data``; never raises.

        Through the libcrypto ``ssl`` already loaded when this Python exports it
        (:mod:`edgeship.signing.ossl`), else through ``cryptography``: the same OpenSSL code.
        """
        from edgeship.signing.ossl import verifier

        check = verifier()
        if check is not None:
            return check(self.raw, bytes(signature), bytes(data))
        return _verify_with_cryptography(self.raw, signature, data)


def _verify_with_cryptography(raw: bytes, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def _ed25519_spki(pem: bytes) -> bytes | None:
    """The raw key of a PEM ``PUBLIC KEY`` holding an Ed25519 SubjectPublicKeyInfo, else None."""
    lines = pem.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != b"-----BEGIN PUBLIC KEY-----" or (
        lines[-1].strip() != b"-----END PUBLIC KEY-----"
    ):
        return None
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(_SPKI_PREFIX) + _RAW_PUBLIC_LEN or not der.startswith(_SPKI_PREFIX):
        return None
    return der[len(_SPKI_PREFIX) :]


class Signer:
    """An Ed25519 private key with a name and a role; it signs and never shows the key.

    ``repr`` and ``str`` name the key and its id only, so a signer can be logged
    without leaking the private key.
    """

    __slots__ = ("_private", "name", "public_key", "role")

    def __init__(self, private_key: Ed25519PrivateKey, *, name: str = "ephemeral", role: str = "") -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private_key
        self.name = name
        self.role = role
        self.public_key = PublicKey(
            private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @classmethod
    def generate(cls, *, name: str = "ephemeral", role: str = "") -> Signer:
        """A fresh key in memory only (tests, simulators); the key store persists keys."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate(), name=name, role=role)

    @classmethod
    def from_seed(cls, seed: bytes, *, name: str = "seeded", role: str = "") -> Signer:
        """A key from its 32-byte RFC 8032 seed: deterministic keys for test vectors."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.from_private_bytes(seed), name=name, role=role)

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: only for the key store to write a 0600 file."""
        from cryptography.hazmat.primitives import serialization

        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, role={self.role!r}, keyid={self.keyid[:16]}…)"

    __str__ = __repr__
