"""Where a device decides to trust a deployment document, and the status code of each refusal.

Like python-tuf's ``trusted_metadata_set``: only rules, no I/O, and the clock is
an argument. Documents and manifests are read with the pydantic-free parsers that
define them (``edgeship.deployment``, ``edgeship.modules.plain``). The MQTT link
hands in the retained message's bytes; the reconcile
loop acts on the :class:`AcceptedDocument` or reports the refusal with
:func:`status_code_for`.

The checks run in this order, each refusal with its own error (and code):

1. size, before any parsing (:class:`DocumentTooLargeError`, 400);
2. envelope shape and payload type (``EnvelopeError``/``PayloadTypeError``, 400);
3. a threshold of the trust root's ``hub`` keys signed it (``SignatureError``, 401);
4. only now is the payload parsed: schemaVersion (412), then every field (400);
5. it names this device (:class:`WrongDeviceError`, 400);
6. its sequence is above the last applied one (:class:`ReplayError`, 409), and at most
   :data:`MAX_SEQUENCE_JUMP` above it (:class:`SequenceJumpError`, 409);
7. it has not expired (:class:`ExpiredDocumentError`, 410);
8. each embedded module manifest is signed by a threshold of ``release`` keys (401)
   and is the module its entry's name says (400).

The jump bound keeps one hub-signed document from locking a device out: a sequence
of 2**62 would make every later document a "replay". A hub issues one sequence per
document per device, so a real jump of a million means years of re-issues; a hostile
hub key can still raise the floor step by step, and the recovery is TUF's: rotate the
hub key. The floor belongs to the hub keys that signed it (:func:`replay_floor`): once
no key that signed it is trusted any more, no document it protected against can
verify, so the count starts again under the new key.

Replay is checked before expiry, as TUF checks rollback before freeze: an old
document that is also expired is first of all a replay. A document issued "in
the future" is accepted: device clocks drift, and the sequence, not the time,
orders documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType

from edgeship.deployment import (
    MAX_DOCUMENT_BYTES,
    Document,
    DocumentTooLargeError,
    SchemaVersionError,
    format_time,
    parse_document,
)
from edgeship.errors import EdgeshipError, EnvelopeError, ManifestError, PayloadTypeError, SignatureError
from edgeship.modules.plain import ModuleManifest, parse_manifest
from edgeship.records import record
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, MODULE_PAYLOAD_TYPE, Envelope, TrustRoot, verify_envelope

__all__ = [
    "MAX_SEQUENCE_JUMP",
    "STATUS_CODES",
    "AcceptedDocument",
    "ExpiredDocumentError",
    "ReplayError",
    "SequenceJumpError",
    "WrongDeviceError",
    "accept_document",
    "replay_floor",
    "status_code_for",
]

MAX_SEQUENCE_JUMP = 2**20  # how far above the last applied sequence (or 0) a document's may be

STATUS_CODES: Mapping[int, str] = MappingProxyType(
    {
        200: "ok: the document was accepted and every module applied",
        202: "in progress: the document was accepted; a module waits for an unreachable blob host and is retried",
        400: "bad document: malformed, too large, for another device, or a module entry that does not match",
        401: "bad signature: not signed by a threshold of trusted hub keys, or a module not by release keys",
        409: "replay: the sequence is not above the last applied one, or jumps too far above it",
        410: "expired: the document's expiry has passed (freeze attack or an offline hub)",
        412: "unsupported schemaVersion: upgrade the agent",
        500: "failed: the document was accepted but applying it failed (see the modules' lastError)",
    }
)
"""Every status code an agent reports, with its meaning (``docs/deployments.md``)."""


class WrongDeviceError(ManifestError):
    """A validly signed document names another device: it was published on the wrong topic."""


class ReplayError(SignatureError):
    """A validly signed document whose sequence is not above the last applied one (rollback)."""


class SequenceJumpError(ReplayError):
    """A validly signed document whose sequence is more than :data:`MAX_SEQUENCE_JUMP` above the floor."""


class ExpiredDocumentError(SignatureError):
    """A validly signed document past its expiry (a freeze attack, or a hub that stopped re-issuing)."""


# Most specific first: EnvelopeError and PayloadTypeError are SignatureErrors, but a
# document that is not an envelope at all is a bad document, not a bad signature.
_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ReplayError, 409),
    (ExpiredDocumentError, 410),
    (SchemaVersionError, 412),
    (DocumentTooLargeError, 400),
    (EnvelopeError, 400),
    (PayloadTypeError, 400),
    (SignatureError, 401),
    (ManifestError, 400),
)


def status_code_for(error: BaseException | None) -> int:
    """The reported status code for a refusal (``None`` is success); unknown errors are 500."""
    if error is None:
        return 200
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return 500


@record
class AcceptedDocument:
    """A document that passed every check, with its modules' verified manifests by module name."""

    document: Document
    manifests: Mapping[str, ModuleManifest]
    manifest_bytes: Mapping[str, bytes]  # the signed payloads, byte for byte (module.json on disk)

    @property
    def sequence(self) -> int:
        return self.document.sequence


def accept_document(
    envelope_bytes: bytes,
    trust_root: TrustRoot,
    device_id: str,
    last_applied_sequence: int | None,
    now: datetime,
) -> AcceptedDocument:
    """Return the document in ``envelope_bytes`` if this device may apply it, else raise.

    ``last_applied_sequence`` is ``None`` on a device that never applied one. Every
    error is an :class:`~edgeship.errors.EdgeshipError`; map it with :func:`status_code_for`.
    """
    if len(envelope_bytes) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLargeError(
            f"Deployment envelope is {len(envelope_bytes)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit; "
            "refusing to parse it."
        )
    payload = verify_envelope(envelope_bytes, trust_root, "hub", DEPLOYMENT_PAYLOAD_TYPE, now=now)
    document = parse_document(payload)
    if document.device_id != device_id:
        raise WrongDeviceError(
            f"Deployment document is for device {document.device_id!r}, not this device ({device_id!r}); "
            "check the hub's topic mapping."
        )
    if last_applied_sequence is not None and document.sequence <= last_applied_sequence:
        raise ReplayError(
            f"Deployment document sequence {document.sequence} is not above the last applied "
            f"{last_applied_sequence}; refusing a replayed or rolled-back document."
        )
    floor = last_applied_sequence or 0
    if document.sequence - floor > MAX_SEQUENCE_JUMP:
        raise SequenceJumpError(
            f"Deployment document sequence {document.sequence} is more than {MAX_SEQUENCE_JUMP} above the last "
            f"applied {floor}; refusing it, since accepting it would refuse every later document. If the hub's "
            "count really moved that far, rotate the hub key (docs/security.md)."
        )
    if now >= document.expires:
        raise ExpiredDocumentError(
            f"Deployment document {document.sequence} expired at {format_time(document.expires)} "
            f"(now {format_time(now)}); the agent keeps running its last applied modules."
        )
    manifests: dict[str, ModuleManifest] = {}
    raw: dict[str, bytes] = {}
    for name, entry in document.modules.items():
        raw[name], manifests[name] = _verify_module(name, entry.module, trust_root, now)
    return AcceptedDocument(document, MappingProxyType(manifests), MappingProxyType(raw))


def replay_floor(
    last_applied_sequence: int | None, floor_keys: Iterable[str] | None, trust_root: TrustRoot
) -> int | None:
    """The sequence a new document must exceed, or ``None`` when there is none.

    ``floor_keys`` are the hub key ids trusted when the floor was recorded (``None``:
    not recorded, as in state written before the trust split; the floor stands). When
    none of them is a hub key of ``trust_root`` any more, documents signed under the
    floor cannot verify, so replay is impossible and the floor is void: this is how a
    hub-key rotation recovers a device whose floor a stolen key pushed up.
    """
    if last_applied_sequence is None or floor_keys is None:
        return last_applied_sequence
    if set(floor_keys) & set(trust_root.role("hub").keyids):
        return last_applied_sequence
    return None


def _verify_module(
    name: str, envelope: Mapping[str, object], trust_root: TrustRoot, now: datetime
) -> tuple[bytes, ModuleManifest]:
    try:
        payload = verify_envelope(Envelope.from_dict(envelope), trust_root, "release", MODULE_PAYLOAD_TYPE, now=now)
        manifest = parse_manifest(payload, source=f"module {name!r}")
    except EdgeshipError as exc:
        raise type(exc)(f"Module {name!r} of the deployment document: {exc}") from exc
    if manifest.name != name:
        raise ManifestError(
            f"Deployment document entry {name!r} carries the signed manifest of module {manifest.name!r}."
        )
    return payload, manifest
