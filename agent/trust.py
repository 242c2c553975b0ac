"""Trust-root rotation on the device: which root verifies documents now, and how a new one is taken.

The decision (:func:`apply_chain`) is pure, as python-tuf's ``trusted_metadata_set``:
bytes and a clock in, the newest trust root reached and the reason the rest was
refused out. :class:`TrustRootKeeper` is the thin I/O around it: it reads the
provisioned root and the rotated one in ``data_dir/state/trust-root.json``, and
writes each accepted rotation atomically before it is used.

The ``trust-root`` message (``docs/mqtt.md``) carries every rotation since the
first root, oldest first, as ``{"chain": [envelope_v2, envelope_v3, ...]}``; a bare
DSSE envelope is a chain of one. Roots at or below the current version are
skipped (the same retained message arrives on every reconnect); each newer one
must be exactly the next version and pass :func:`edgeship.signing.rotate` against
the root before it (a threshold of the *current* root keys and of its own). The
chain stops at the first refusal; the roots accepted before it stay accepted, as
TUF keeps each intermediate root it verified.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeship.errors import EdgeshipError, PayloadTypeError, TrustRootError
from edgeship.fsutil import atomic_write_bytes
from edgeship.records import record
from edgeship.signing import TRUST_ROOT_PAYLOAD_TYPE, Envelope, TrustRoot, load_trust_root, rotate

__all__ = ["MAX_CHAIN", "MAX_MESSAGE_BYTES", "ROTATED_FILE", "ChainOutcome", "TrustRootKeeper", "apply_chain",
           "parse_chain"]

log = logging.getLogger("edgeship.agent")

MAX_MESSAGE_BYTES = 1024 * 1024  # a trust-root message (a root is a few KB; 1 MiB is hundreds of rotations)
MAX_CHAIN = 256  # envelopes in one message
ROTATED_FILE = "trust-root.json"  # under data_dir/state/: the newest rotated root, a DSSE envelope


@record
class ChainOutcome:
    """Where a chain left the device: the root to use, the envelopes accepted, the refusal if any."""

    root: TrustRoot
    accepted: tuple[bytes, ...] = ()  # envelope JSON of each accepted rotation, oldest first
    error: EdgeshipError | None = None

    @property
    def rotated(self) -> bool:
        return bool(self.accepted)


def parse_chain(payload: bytes) -> list[Envelope]:
    """The envelopes of a trust-root message, oldest first; raise TrustRootError if it is not one."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise TrustRootError(
            f"Trust-root message is {len(payload)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit; refusing it."
        )
    try:
        data: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustRootError(f"Trust-root message is not JSON ({exc}); the hub must send {{\"chain\": [...]}}.") \
            from exc
    if isinstance(data, dict) and "payloadType" in data:
        items: Any = [data]
    elif isinstance(data, dict) and set(data) == {"chain"} and isinstance(data["chain"], list):
        items = data["chain"]
    else:
        raise TrustRootError(
            "Trust-root message must be {\"chain\": [envelope, ...]} or one trust-root envelope; "
            "publish it with 'edgeship hub trust-root publish'."
        )
    if not items or len(items) > MAX_CHAIN:
        raise TrustRootError(f"Trust-root chain must hold 1 to {MAX_CHAIN} envelopes, not {len(items)}.")
    envelopes: list[Envelope] = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise TrustRootError(f"Trust-root chain entry {index} is not a DSSE envelope object.")
        try:
            envelopes.append(Envelope.from_dict(item))
        except EdgeshipError as exc:
            raise TrustRootError(f"Trust-root chain entry {index}: {exc}") from exc
    return envelopes


def _claimed_version(envelope: Envelope) -> int:
    """The version the (not yet verified) payload claims: only used to skip roots already held."""
    if envelope.payload_type != TRUST_ROOT_PAYLOAD_TYPE:
        raise PayloadTypeError(
            f"Trust-root chain entry has payloadType {envelope.payload_type!r}, expected "
            f"{TRUST_ROOT_PAYLOAD_TYPE!r}; it is not a trust root."
        )
    return TrustRoot.from_json(envelope.payload).version


def apply_chain(current: TrustRoot, payload: bytes, now: datetime) -> ChainOutcome:
    """Rotate ``current`` through every newer root of the message, one version at a time.

    Never raises for a bad message: the refusal is the outcome's ``error`` (an
    :class:`~edgeship.errors.EdgeshipError` saying what was wrong), and ``root`` is the
    newest root accepted, ``current`` itself when none was.
    """
    root = current
    accepted: list[bytes] = []
    try:
        envelopes = parse_chain(payload)
        for envelope in envelopes:
            version = _claimed_version(envelope)
            if version <= root.version:
                continue  # already held: the retained chain is re-delivered on every connect
            if version != root.version + 1:
                raise TrustRootError(
                    f"Trust root version {version} cannot follow version {root.version}: roots rotate one "
                    f"version at a time, so the hub must send every version from {root.version + 1} on."
                )
            root = rotate(root, envelope, now=now)
            accepted.append(envelope.to_json().encode("utf-8"))
    except EdgeshipError as exc:
        return ChainOutcome(root, tuple(accepted), exc)
    except Exception as exc:  # an unexpected parser failure is still a refusal, never a crash
        return ChainOutcome(root, tuple(accepted), TrustRootError(f"The trust-root message could not be read: {exc}."))
    return ChainOutcome(root, tuple(accepted))


class TrustRootKeeper:
    """The device's current trust root: the provisioned file, overridden by a newer rotated one."""

    def __init__(self, provisioned: Path, state_dir: Path) -> None:
        from edgeship.modules.verify import load_trust_root_file

        self.rotated_file = Path(state_dir) / ROTATED_FILE
        root = load_trust_root_file(provisioned)
        rotated = self._load_rotated()
        if rotated is not None and rotated.version > root.version:
            root = rotated
        self.root = root
        self.last_error: str | None = None

    def _load_rotated(self) -> TrustRoot | None:
        try:
            data = self.rotated_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("rotated trust root %s not readable (%s); using the provisioned one", self.rotated_file, exc)
            return None
        try:
            return load_trust_root(data)
        except EdgeshipError as exc:
            # The hub's retained chain rotates the device again on its next connect.
            log.warning("rotated trust root %s refused (%s); using the provisioned one", self.rotated_file, exc)
            return None

    def offer(self, payload: bytes, now: datetime) -> bool:
        """A ``trust-root`` message arrived; True when the root or the reported error changed."""
        if not payload:
            return False  # the hub cleared the retained message: keep the current root
        before = (self.root.version, self.last_error)
        outcome = apply_chain(self.root, payload, now)
        error = outcome.error
        if outcome.rotated:
            try:
                atomic_write_bytes(self.rotated_file, outcome.accepted[-1], mode=0o600)  # before it is used
            except OSError as exc:
                error = TrustRootError(
                    f"Trust root version {outcome.root.version} was valid but could not be saved to "
                    f"{self.rotated_file} ({exc.strerror}); free space or fix permissions, it is retried on reconnect."
                )
            else:
                self.root = outcome.root
                log.info("trust root rotated to version %d", self.root.version)
        self.last_error = str(error) if error is not None else None
        if error is not None:
            log.warning("refused a trust root: %s", error)
        return (self.root.version, self.last_error) != before
