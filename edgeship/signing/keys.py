"""The workspace key store: Ed25519 signing keys under ``<workspace>/keys``.

Layout, per key ``NAME``::

    keys/NAME.key    private key, PKCS#8 PEM, unencrypted, mode 0600
    keys/NAME.pub    public key, SubjectPublicKeyInfo PEM, mode 0644
    keys/NAME.json   {"name", "role", "keyid", "keytype", "created"}, mode 0644

Invariants: a name is claimed by creating ``NAME.key`` with a no-clobber link, so an
existing key is never overwritten, even by two concurrent ``keys create``; the
sidecar is written last, so a key is listed only once all three files exist; the
private key is only ever read back into a :class:`Signer`, never printed.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgeship.errors import InputError, SigningKeyError
from edgeship.fsutil import atomic_write_text
from edgeship.signing.ed25519 import KEYTYPE, PublicKey, Signer
from edgeship.signing.trust import ROLES
from edgeship.workspace import Workspace

__all__ = ["KEY_NAME_RULE", "KeyInfo", "Keyring", "load_signer", "validate_key_name"]

KEY_NAME_RULE = "1-64 characters: letters, digits, '-', '_' and '.', starting with a letter or digit"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a workspace key: everything except the private key."""

    name: str
    role: str
    public_key: PublicKey
    created: str

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def to_dict(self) -> dict[str, Any]:
        """The public export: enough to put the key into a trust root."""
        return {
            "name": self.name,
            "role": self.role,
            "keyid": self.keyid,
            "keytype": KEYTYPE,
            "public": self.public_key.to_base64(),
            "created": self.created,
        }


class Keyring:
    """The signing keys of one workspace. Construction touches no disk."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.dir = workspace.keys_dir

    def create(self, role: str, name: str | None = None) -> KeyInfo:
        """Generate a key for ``role`` named ``name`` (default: the role); never overwrites."""
        if role not in ROLES:
            raise InputError(f"Unknown key role {role!r}; choose one of {', '.join(ROLES)}.")
        name = validate_key_name(role if name is None else name)
        self._ensure_dir()
        signer = Signer.generate(name=name, role=role)
        _create_exclusive(self._path(name, ".key"), signer.private_pem(), 0o600)
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        info = KeyInfo(name, role, signer.public_key, created)
        atomic_write_text(self._path(name, ".pub"), signer.public_key.to_pem(), 0o644)
        sidecar = {k: v for k, v in info.to_dict().items() if k != "public"}
        atomic_write_text(self._path(name, ".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        return info

    def list(self, role: str | None = None) -> builtins.list[KeyInfo]:
        """Complete keys (sidecar present), sorted by name, optionally of one role."""
        if not self.dir.is_dir():
            return []
        infos = [self.get(p.stem) for p in sorted(self.dir.glob("*.json")) if _KEY_NAME.match(p.stem)]
        return [i for i in infos if role is None or i.role == role]

    def get(self, name: str) -> KeyInfo:
        validate_key_name(name)
        sidecar = self._path(name, ".json")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            public = PublicKey.from_pem(self._path(name, ".pub").read_bytes())
        except FileNotFoundError as exc:
            raise SigningKeyError(
                f"No key named {name!r} in {self.dir}; create it with 'edgeship keys create --role ROLE "
                f"--name {name}' or see 'edgeship keys list'."
            ) from exc
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"Key {name!r} in {self.dir} is unreadable: {exc}.") from exc
        if not isinstance(meta, dict) or meta.get("keyid") != public.keyid or meta.get("role") not in ROLES:
            raise SigningKeyError(
                f"Key {name!r}: {sidecar.name} does not match {name}.pub; the files were edited."
            )
        return KeyInfo(name, meta["role"], public, str(meta.get("created", "")))

    def signer(self, name: str) -> Signer:
        """Load the private key ``name`` for signing; checks it matches its public half."""
        info = self.get(name)
        path = self._path(name, ".key")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise SigningKeyError(f"Key {name!r} has no private half ({path.name}); it cannot sign.") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise SigningKeyError(f"Private key {path} is unreadable: {exc}.") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"Private key {path} is not an Ed25519 key.")
        signer = Signer(key, name=name, role=info.role)
        if signer.keyid != info.keyid:
            raise SigningKeyError(
                f"Private key {path.name} does not match {name}.pub; the files were edited."
            )
        return signer

    def _path(self, name: str, suffix: str) -> Path:
        return self.dir / f"{name}{suffix}"

    def _ensure_dir(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.dir.chmod(0o700)


def load_signer(workspace: Workspace, name: str) -> Signer:
    """The signer for workspace key ``name`` (what the packager and hub call)."""
    return Keyring(workspace).signer(name)


def validate_key_name(name: str) -> str:
    """A key name becomes a file name, so it is restricted: no separators, no leading dot."""
    if not _KEY_NAME.match(name or ""):
        raise InputError(f"Invalid key name {name!r}: a key name has {KEY_NAME_RULE}.")
    return name


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole or not at all, and fail if it already exists.

    The data goes to a temporary file first (mode set before any byte is written),
    then ``os.link`` publishes it: link refuses an existing target atomically, which a
    rename would silently replace.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise SigningKeyError(
                f"A key named {path.stem!r} already exists in {path.parent}; nothing was changed. "
                "Choose another --name."
            ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
