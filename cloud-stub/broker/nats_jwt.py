"""NATS's nkeys and JWTs, as far as the auth callout needs them (ADR 0051).

An nkey is an Ed25519 key written the way NATS writes it: base32 of a prefix byte that
says what the key belongs to (``A…`` an account, ``U…`` a user, ``N…`` a server, ``S…``
a seed), the 32 key bytes and a CRC-16/XMODEM of both. A NATS JWT is an ordinary
three-part JWT whose header says ``"alg": "ed25519-nkey"`` and whose signature is the
issuer's Ed25519 signature of ``header.payload``; ``iss`` is the issuer's public nkey.

The official ``nkeys`` package for Python cannot check a signature with a public key
alone, nor make a new key, so this file does both with ``cryptography``'s Ed25519, which
the hub already uses for its own keys. The real nats-server is the test of the encoding
(``tests/scale/test_nats_auth_callout.py``): it refuses a key or a JWT it cannot decode.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgeship.errors import InputError

__all__ = ["MAX_TOKEN", "NKey", "decode_jwt", "encode_jwt", "public_key_bytes"]

ACCOUNT, SERVER, USER = 0, 13 << 3, 20 << 3  # prefix bytes: 'A', 'N', 'U'
_SEED = 18 << 3  # 'S'
_KINDS = {ACCOUNT: "account", SERVER: "server", USER: "user"}
MAX_TOKEN = 64 * 1024  # bytes of one JWT read: an authorization request is ~1 KiB (a client certificate adds ~2)
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _checksum(data: bytes) -> bytes:
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")  # CRC-16/XMODEM, little-endian as NATS writes it


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str, what: str) -> bytes:
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"The {what} is not an nkey (not base32); give the key NATS printed.") from exc
    if len(raw) < 3 or _checksum(raw[:-2]) != raw[-2:]:
        raise InputError(f"The {what} is not an nkey (its checksum does not match); give the whole key.")
    return raw[:-2]


def public_key_bytes(encoded: str, prefix: int) -> bytes:
    """The 32 Ed25519 bytes of a public nkey of the given kind (``ACCOUNT``, ``SERVER``, ``USER``)."""
    raw = _unb32(encoded, f"public {_KINDS[prefix]} key")
    if len(raw) != 33 or raw[0] != prefix:
        raise InputError(f"{encoded[:12]}… is not a public {_KINDS[prefix]} nkey; give one that starts with "
                         f"{_b32(bytes([prefix]))[0]!r}.")  # fmt: skip
    return raw[1:]


class NKey:
    """A private nkey (an account's, for the auth callout's issuer): its seed, its public key, signing."""

    def __init__(self, seed: str) -> None:
        raw = _unb32(seed.strip(), "nkey seed")
        if len(raw) != 34 or raw[0] & 0xF8 != _SEED:
            raise InputError("The nkey seed is not one (it must start with 'S'); give the seed file the hub wrote.")
        self.prefix = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        if self.prefix not in _KINDS:
            raise InputError("The nkey seed is of a kind the hub does not use; give an account seed ('SA…').")
        self._key = Ed25519PrivateKey.from_private_bytes(raw[2:])
        self.seed = seed.strip()
        public = self._key.public_key().public_bytes_raw()
        self.public_key = _b32(bytes([self.prefix]) + public + _checksum(bytes([self.prefix]) + public))

    @classmethod
    def generate(cls, prefix: int = ACCOUNT) -> NKey:
        raw = bytes([_SEED | prefix >> 5, (prefix & 31) << 3]) + secrets.token_bytes(32)
        return cls(_b32(raw + _checksum(raw)))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: Mapping[str, Any], issuer: NKey) -> str:
    """A JWT of ``claims`` signed by ``issuer``; ``iss``, ``iat`` and a random ``jti`` are filled in."""
    body = {**claims, "iss": issuer.public_key, "iat": int(time.time()), "jti": _b32(secrets.token_bytes(20))}
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode('ascii')))}"


def decode_jwt(token: bytes | str, issuer_prefix: int) -> dict[str, Any]:
    """The claims of a JWT whose ``iss`` is a public nkey of ``issuer_prefix``'s kind and whose signature is that
    key's; :class:`InputError` for anything else (too large, malformed, another algorithm, a bad signature)."""
    text = token.decode("ascii", errors="replace") if isinstance(token, bytes) else token
    if len(text) > MAX_TOKEN:
        raise InputError(f"The JWT is {len(text)} bytes, more than {MAX_TOKEN}; it is not one NATS sends.")
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise InputError("The JWT does not have three parts (header.payload.signature).")
    try:
        header, claims, signature = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1])), _unb64(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise InputError(f"The JWT is not base64url JSON ({exc}).") from exc
    if not isinstance(header, dict) or header.get("alg") not in ("ed25519-nkey", "ed25519"):
        raise InputError("The JWT is not signed with an nkey (alg ed25519-nkey).")
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise InputError("The JWT's claims name no issuer (iss).")
    key = Ed25519PublicKey.from_public_bytes(public_key_bytes(claims["iss"], issuer_prefix))
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except InvalidSignature as exc:
        raise InputError("The JWT's signature is not its issuer's.") from exc
    return claims
