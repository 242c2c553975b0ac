"""DSSE envelopes: the wire format of every signed edgeship document.

Follows DSSE v1 (github.com/secure-systems-lab/dsse, ``protocol.md`` and
``envelope.md``)::

    {"payloadType": "<type>", "payload": "<base64>", "signatures": [{"keyid": "<hex>", "sig": "<base64>"}]}

Each signature covers the Pre-Authentication Encoding, never the base64 text::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``type`` is the UTF-8 payload type, ``LEN`` the ASCII decimal byte length with
no leading zeros and ``SP`` one space. Binding the type into the signed bytes stops a
signature for one kind of document being replayed as another.

Parsing is strict about shape (types, duplicate JSON keys, base64) and follows the
spec on encodings: standard and URL-safe base64 are both accepted. ``keyid`` is an
unauthenticated hint; :func:`edgeship.signing.trust.verify_envelope` never trusts it
beyond choosing which key to try.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from edgeship.errors import EnvelopeError, InputError
from edgeship.records import record

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "Envelope",
    "Signature",
    "SignerLike",
    "countersign",
    "pae",
    "sign_envelope",
]

MAX_ENVELOPE_BYTES = 64 * 1024 * 1024  # bytes; a bound on what a verifier will even parse
MAX_SIGNATURES = 64  # per envelope; bounds verification work (each may be tried against n keys)


class SignerLike(Protocol):
    """Anything that signs with a key it can name: a workspace key, an HSM, a test key."""

    @property
    def keyid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload_type`` and ``payload``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@record
class Signature:
    """One DSSE signature: raw signature bytes and the optional key id hint."""

    sig: bytes
    keyid: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"sig": base64.b64encode(self.sig).decode("ascii")}
        if self.keyid is not None:
            out["keyid"] = self.keyid
        return out


@record
class Envelope:
    """A decoded DSSE envelope. ``payload`` is the raw body, not its base64.

    An Envelope says nothing about trust: only
    :func:`edgeship.signing.trust.verify_envelope` turns one into trusted bytes.
    """

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [s.to_dict() for s in self.signatures],
        }

    def to_json(self) -> str:
        """Pretty, key-sorted JSON with a trailing newline (stable across runs)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: str | bytes) -> Envelope:
        """Parse envelope JSON; any defect is an :class:`EnvelopeError` saying which."""
        if len(data) > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(f"Envelope is larger than {MAX_ENVELOPE_BYTES} bytes; refusing to parse it.")
        try:
            obj = json.loads(data, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise EnvelopeError(f"Envelope is not valid JSON: {exc}.") from exc
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Envelope:
        if not isinstance(obj, Mapping):
            raise EnvelopeError("Envelope must be a JSON object with payloadType, payload and signatures.")
        payload_type = obj.get("payloadType")
        if not isinstance(payload_type, str):
            raise EnvelopeError("Envelope field 'payloadType' is missing or not a string.")
        payload_b64 = obj.get("payload")
        if not isinstance(payload_b64, str):
            raise EnvelopeError("Envelope field 'payload' is missing or not a base64 string.")
        raw_sigs = obj.get("signatures")
        if not isinstance(raw_sigs, list):
            raise EnvelopeError("Envelope field 'signatures' is missing or not a list.")
        if len(raw_sigs) > MAX_SIGNATURES:
            raise EnvelopeError(
                f"Envelope has {len(raw_sigs)} signatures; at most {MAX_SIGNATURES} are read."
            )
        signatures = []
        for index, item in enumerate(raw_sigs, start=1):
            if not isinstance(item, Mapping) or not isinstance(item.get("sig"), str):
                raise EnvelopeError(f"Envelope signature {index} is not an object with a string 'sig'.")
            keyid = item.get("keyid")
            if keyid is not None and not isinstance(keyid, str):
                raise EnvelopeError(f"Envelope signature {index} has a 'keyid' that is not a string.")
            signatures.append(Signature(_b64decode(item["sig"], f"signature {index}"), keyid or None))
        return cls(payload_type, _b64decode(payload_b64, "payload"), tuple(signatures))


def sign_envelope(payload: bytes, payload_type: str, signers: Iterable[SignerLike]) -> Envelope:
    """Sign ``payload`` as ``payload_type`` with every signer (one signature per distinct key)."""
    envelope = countersign(Envelope(payload_type, payload), signers)
    if not envelope.signatures:
        raise InputError("Nothing to sign with: pass at least one signing key.")
    return envelope


def countersign(envelope: Envelope, signers: Iterable[SignerLike]) -> Envelope:
    """Add signatures by ``signers`` whose key has not signed yet (k-of-n signing by several holders)."""
    seen = {s.keyid for s in envelope.signatures}
    added = list(envelope.signatures)
    message = envelope.pae()
    for signer in signers:
        if signer.keyid in seen:
            continue
        seen.add(signer.keyid)
        added.append(Signature(signer.sign(message), signer.keyid))
    return Envelope(envelope.payload_type, envelope.payload, tuple(added))


def _b64decode(text: str, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows both), padding optional, nothing else."""
    normalized = text.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        return base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"Envelope {what} is not valid base64.") from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse ``{"payload": A, "payload": B}``: parsers disagree on which one wins."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise EnvelopeError(f"Envelope JSON repeats the key {key!r}; refusing an ambiguous document.")
        out[key] = value
    return out
