"""Signing one deployment document per device, fast: what a group of devices shares is built once.

Devices that get the same modules from the same deployments differ only in their
id and sequence, so the document's canonical bytes are a template with two holes.
The first document of each group is built and validated by
:func:`edgeship.deployment.build_document`, and the template must reproduce its
bytes exactly; otherwise the group keeps the validated (slower) path. Each
document is still signed on its own (Ed25519, about 50 µs), so every device gets
a document that names it and only it.
"""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from edgeship.deployment import SCHEMA_VERSION, ModuleEntry, build_document, format_time
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, Envelope, Signature, SignerLike, pae

__all__ = ["DocumentGroup", "signed_message"]


_PAYLOAD_TYPE = json.dumps(DEPLOYMENT_PAYLOAD_TYPE)
_PAE_HEAD = pae(DEPLOYMENT_PAYLOAD_TYPE, b"").rsplit(b" ", 2)[0]  # b"DSSEv1 <len> <type>"


def signed_message(payload: bytes) -> bytes:
    """``pae(DEPLOYMENT_PAYLOAD_TYPE, payload)``: what each signer signs."""
    return b"%b %d %b" % (_PAE_HEAD, len(payload), payload)


def _device_json(device_id: str) -> str:
    """``device_id`` as a JSON string; ids are one topic segment of printable ASCII, most need no escaping."""
    if device_id.isascii() and device_id.isprintable() and '"' not in device_id and "\\" not in device_id:
        return f'"{device_id}"'
    return _compact(device_id)


def _compact(value: Any, *, sort_keys: bool = False) -> str:
    """The JSON text ``DeploymentDocument.to_bytes`` would write for ``value``."""
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


class DocumentGroup:
    """The devices of one re-evaluation that get ``entries`` from ``deployments``; signs their documents."""

    def __init__(
        self,
        entries: Mapping[str, ModuleEntry],
        deployments: Sequence[str],
        fingerprint: str,
        *,
        issued_at: datetime,
        ttl: timedelta,
        signers: Sequence[SignerLike],
    ) -> None:
        self.entries = dict(entries)
        self.deployments = sorted(set(deployments))
        self.fingerprint = fingerprint
        self.issued_at = issued_at
        self.ttl = ttl
        self.signers = list(signers)
        self._template: tuple[str, str] | None = None  # the text around the device id and the sequence
        self._checked = False
        self._fast_envelope: bool | None = None  # None until the first envelope was compared
        self._times: tuple[datetime, datetime] | None = None
        self._signers_seen: list[SignerLike] | None = None  # the list _unique was made from (set anew on rotation)
        self._unique: list[SignerLike] = []
        self._keyids: list[str] | None = None  # '{"keyid":...,"sig":"' per distinct signer

    def sign(self, device_id: str, sequence: int) -> tuple[str, datetime, datetime]:
        """``(envelope JSON, issued, expires)`` of ``device_id``'s document number ``sequence``.

        The envelope is ``Envelope.to_dict()`` as key-sorted compact JSON; base64 needs
        no escaping, so the text is joined directly (checked once per group against
        ``json.dumps``, which is used instead should they ever differ).
        """
        payload = self.payload(device_id, sequence)
        return self.envelope(payload, self.signatures(signed_message(payload)))

    def signatures(self, message: bytes) -> list[bytes]:
        """One Ed25519 signature of the PAE ``message`` per distinct signer key (as ``countersign`` adds them)."""
        return [signer.sign(message) for signer in self.distinct_signers()]

    def envelope(self, payload: bytes, signatures: Sequence[bytes]) -> tuple[str, datetime, datetime]:
        """The envelope text of ``payload`` with ``signatures`` (from :meth:`signatures`, in signer order)."""
        assert self._times is not None  # set by payload()
        signers = self.distinct_signers()
        if self._fast_envelope is not True:
            envelope = Envelope(DEPLOYMENT_PAYLOAD_TYPE, payload,
                                tuple(Signature(sig, s.keyid) for s, sig in zip(signers, signatures, strict=True)))
            reference = _compact(envelope.to_dict(), sort_keys=True)
            if self._fast_envelope is False:
                return reference, *self._times
        parts = self._keyids or [f'{{"keyid":{_compact(s.keyid)},"sig":"' for s in signers]
        self._keyids = parts
        text = (
            f'{{"payload":"{b64encode(payload).decode("ascii")}","payloadType":{_PAYLOAD_TYPE},"signatures":['
            + ",".join(f'{part}{b64encode(sig).decode("ascii")}"}}'
                       for part, sig in zip(parts, signatures, strict=True))
            + "]}"
        )
        if self._fast_envelope is None:
            self._fast_envelope = text == reference
            text = reference
        return text, *self._times

    def distinct_signers(self) -> list[SignerLike]:
        """The signers, one per key id, in order (a key listed twice signs once)."""
        if self._signers_seen is not self.signers:
            unique: dict[str, SignerLike] = {}
            for signer in self.signers:
                unique.setdefault(signer.keyid, signer)
            self._unique = list(unique.values())
            self._signers_seen = self.signers
            self._keyids = None
        return self._unique

    def payload(self, device_id: str, sequence: int) -> bytes:
        """The document's canonical bytes (what is signed); the first of the group is built and validated."""
        if self._template is not None:
            head, tail = self._template
            return f"{head}{_device_json(device_id)}{tail}{sequence}}}".encode()
        document = build_document(
            device_id=device_id, sequence=sequence, modules=self.entries, deployments=self.deployments,
            issued_at=self.issued_at, ttl=self.ttl,
        )
        validated = document.to_bytes()
        if not self._checked:
            self._checked = True
            self._times = (document.issued_at, document.expires)
            data = document.model_dump(by_alias=True, exclude_none=True, mode="json")
            head = f'{{"deployments":{_compact(data["deployments"])},"deviceId":'
            tail = (
                f',"expires":"{format_time(document.expires)}","issuedAt":"{format_time(document.issued_at)}"'
                f',"modules":{_compact(data["modules"], sort_keys=True)},"schemaVersion":{SCHEMA_VERSION}'
                ',"sequence":'
            )
            if f"{head}{_compact(device_id)}{tail}{sequence}}}".encode() == validated:
                self._template = (head, tail)
        return validated
