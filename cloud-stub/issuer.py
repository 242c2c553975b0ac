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
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, SignerLike, sign_envelope

__all__ = ["DocumentGroup"]


_PAYLOAD_TYPE = json.dumps(DEPLOYMENT_PAYLOAD_TYPE)


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

    def sign(self, device_id: str, sequence: int) -> tuple[str, datetime, datetime]:
        """``(envelope JSON, issued, expires)`` of ``device_id``'s document number ``sequence``.

        The envelope is ``Envelope.to_dict()`` as key-sorted compact JSON; base64 needs
        no escaping, so the text is joined directly (checked once per group against
        ``json.dumps``, which is used instead should they ever differ).
        """
        payload = self._payload(device_id, sequence)
        envelope = sign_envelope(payload, DEPLOYMENT_PAYLOAD_TYPE, self.signers)
        assert self._times is not None  # set by _payload
        if self._fast_envelope is False:
            return _compact(envelope.to_dict(), sort_keys=True), *self._times
        signatures = ",".join(
            (f'{{"keyid":{_compact(sig.keyid)},' if sig.keyid is not None else "{")
            + f'"sig":"{b64encode(sig.sig).decode("ascii")}"}}'
            for sig in envelope.signatures
        )
        text = (
            f'{{"payload":"{b64encode(payload).decode("ascii")}","payloadType":{_PAYLOAD_TYPE},'
            f'"signatures":[{signatures}]}}'
        )
        if self._fast_envelope is None:
            reference = _compact(envelope.to_dict(), sort_keys=True)
            self._fast_envelope = text == reference
            text = reference
        return text, *self._times

    def _payload(self, device_id: str, sequence: int) -> bytes:
        if self._template is not None:
            head, tail = self._template
            return f"{head}{_compact(device_id)}{tail}{sequence}}}".encode()
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
