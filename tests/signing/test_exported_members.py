"""Pin the public signing API (after httpx): a change here is a deliberate API change."""

from __future__ import annotations

import subprocess
import sys

import edgeship.signing


def test_public_api_is_pinned() -> None:
    assert sorted(edgeship.signing.__all__) == sorted(
        [
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
    )
    for name in edgeship.signing.__all__:
        assert hasattr(edgeship.signing, name), name


def test_payload_types_are_stable() -> None:
    assert edgeship.signing.MODULE_PAYLOAD_TYPE == "application/vnd.edgeship.module+json"
    assert edgeship.signing.DEPLOYMENT_PAYLOAD_TYPE == "application/vnd.edgeship.deployment+json"
    assert edgeship.signing.TRUST_ROOT_PAYLOAD_TYPE == "application/vnd.edgeship.trust-root+json"


def test_the_cli_starts_without_importing_cryptography() -> None:
    """The core install has no cryptography (ADR 0001); only keys commands need it."""
    code = "import sys, edgeship.cli; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
