"""Signing and verification of edgeship documents: DSSE envelopes, Ed25519 keys, trust roots.

The public surface, in the order a document travels::

    signer = load_signer(workspace, "release")                     # or Keyring(workspace).signer(...)
    env = sign_envelope(manifest_bytes, MODULE_PAYLOAD_TYPE, [signer])
    path.write_text(env.to_json())
    ...
    root = TrustRoot.from_json(...) or load_trust_root(envelope_bytes)
    payload = verify_envelope(path.read_bytes(), root, "release", MODULE_PAYLOAD_TYPE)
    root = rotate(root, new_root_envelope_bytes)                    # trust-root update

``cryptography`` is imported for signing and for the key store (``keys``, loaded on
first use of its names); verification uses the libcrypto that ``ssl`` loaded when it
can (``edgeship.signing.ossl``), so the agent process holds no ``cryptography``. The
``agent``, ``packager`` and ``hub`` extras install it. See ``docs/signing.md`` for the formats and
``docs/adr/0003-signing-dsse-ed25519.md`` for the decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeship.signing.dsse import Envelope, Signature, SignerLike, countersign, pae, sign_envelope
from edgeship.signing.ed25519 import PublicKey, Signer, keyid_of
from edgeship.signing.trust import (
    ROLES,
    TRUST_ROOT_PAYLOAD_TYPE,
    Role,
    TrustRoot,
    load_trust_root,
    rotate,
    sign_trust_root,
    verify_envelope,
)

__all__ = [
    "DEPLOYMENT_PAYLOAD_TYPE",
    "MODULE_PAYLOAD_TYPE",
    "ROLES",
    "TRUST_ROOT_PAYLOAD_TYPE",
    "Envelope",
    "KeyInfo",
    "Keyring",
    "PublicKey",
    "Role",
    "Signature",
    "Signer",
    "SignerLike",
    "TrustRoot",
    "countersign",
    "keyid_of",
    "load_signer",
    "load_trust_root",
    "pae",
    "rotate",
    "sign_envelope",
    "sign_trust_root",
    "verify_envelope",
]

MODULE_PAYLOAD_TYPE = "application/vnd.edgeship.module+json"
"""Module manifests, signed by ``release`` keys when the packager builds a module."""

DEPLOYMENT_PAYLOAD_TYPE = "application/vnd.edgeship.deployment+json"
"""Per-device deployment documents, signed by ``hub`` keys."""

_LAZY = {"KeyInfo", "Keyring", "load_signer"}  # the key store: files, cryptography's PEM loading

if TYPE_CHECKING:
    from edgeship.signing.keys import KeyInfo, Keyring, load_signer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from edgeship.signing import keys

        return getattr(keys, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
