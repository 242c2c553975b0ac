"""The hub's trust-root history: which rotations it accepted, on disk, and the message devices get.

Decisions apart from I/O: :func:`check_rotation` and :func:`chain_message` are
pure; :class:`TrustRootFiles` only reads and writes the workspace. The history is
kept because a device several versions behind needs every intermediate root (a
root is accepted only when signed by the root before it, ADR 0013)::

    <workspace>/trust-root.json          the current root (what 'hub serve' loads)
    <workspace>/trust-roots/v2.json      every root the hub rotated to, one file per version
    <workspace>/trust-roots/v3.json
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from edgeship.errors import PayloadTypeError, TrustRootError
from edgeship.fsutil import atomic_write_bytes
from edgeship.signing import TRUST_ROOT_PAYLOAD_TYPE, Envelope, SignerLike, TrustRoot, rotate

__all__ = ["CHAIN_DIR", "TrustRootFiles", "chain_message", "check_rotation", "signers_for"]

CHAIN_DIR = "trust-roots"
_CHAIN_FILE = re.compile(r"^v([1-9][0-9]{0,8})\.json$")


def check_rotation(current: TrustRoot, envelope: bytes, now: datetime) -> TrustRoot:
    """The new root if devices holding ``current`` will accept it, else a SignatureError saying why.

    The same rules as the agent (``edgeship.agent.trust``): the next version exactly,
    signed by a threshold of the current root keys and of its own.
    """
    env = Envelope.from_json(envelope)
    if env.payload_type != TRUST_ROOT_PAYLOAD_TYPE:
        raise PayloadTypeError(
            f"The envelope's payloadType is {env.payload_type!r}, not {TRUST_ROOT_PAYLOAD_TYPE!r}; "
            "publish a file written by 'edgeship keys trust-root'."
        )
    claimed = TrustRoot.from_json(env.payload).version
    if claimed == current.version:
        raise TrustRootError(
            f"The hub's trust root is already version {claimed} (this rotation, or another to the same "
            f"version, was accepted first); to rotate again write version {claimed + 1} with "
            "'edgeship keys trust-root --previous'."
        )
    if claimed != current.version + 1:
        raise TrustRootError(
            f"The new trust root has version {claimed}, but the hub's current one is {current.version}; "
            f"write version {current.version + 1} with 'edgeship keys trust-root --previous'."
        )
    return rotate(current, env, now=now)


def signers_for(root: TrustRoot, held: Sequence[SignerLike], current: Sequence[SignerLike]) -> list[SignerLike]:
    """The hub keys to sign with under ``root``: the current ones if it still lists them, else held ones it lists.

    Raises TrustRootError when the hub holds fewer of the root's hub keys than its threshold
    (devices would refuse every document it signs).
    """
    listed = set(root.role("hub").keyids)
    threshold = root.role("hub").threshold
    if len({s.keyid for s in current} & listed) >= threshold and all(s.keyid in listed for s in current):
        return list(current)
    chosen: dict[str, SignerLike] = {}
    for signer in held:
        if signer.keyid in listed and len(chosen) < threshold:
            chosen.setdefault(signer.keyid, signer)
    if len(chosen) < threshold:
        raise TrustRootError(
            f"The new trust root's hub role needs {threshold} of its keys, but this hub holds {len(chosen)}; "
            "create or import its hub key into the hub's workspace ('edgeship keys create --role hub') first."
        )
    return list(chosen.values())


def chain_message(envelopes: Sequence[bytes]) -> bytes | None:
    """The retained ``trust-root`` payload ``{"chain": [...]}``, or None before the first rotation."""
    if not envelopes:
        return None
    chain = [json.loads(e) for e in envelopes]
    return json.dumps({"chain": chain}, separators=(",", ":"), sort_keys=True).encode("utf-8")


class TrustRootFiles:
    """Reads and writes the current root and the rotation history in the hub's workspace."""

    def __init__(self, current_file: Path, chain_dir: Path) -> None:
        self.current_file = Path(current_file)
        self.chain_dir = Path(chain_dir)

    def chain(self) -> list[bytes]:
        """Every stored rotation's envelope, oldest version first."""
        if not self.chain_dir.is_dir():
            return []
        found: list[tuple[int, Path]] = []
        for path in self.chain_dir.iterdir():
            match = _CHAIN_FILE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return [path.read_bytes() for _version, path in sorted(found)]

    def save(self, envelope: bytes, root: TrustRoot) -> None:
        """Record a rotation: the history entry first, then the current root (each file atomically)."""
        self.chain_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.chain_dir / f"v{root.version}.json", envelope)
        atomic_write_bytes(self.current_file, envelope)
