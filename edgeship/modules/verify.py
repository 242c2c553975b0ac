"""Where a module directory's signature and artifact digests are checked.

``verify_module_dir`` is what ``edgeship module verify`` and the agent run before
trusting anything in a module. The checks, each with its own error:

1. the envelope is well formed, of the module payload type, and signed by a
   threshold of the trust root's ``release`` keys (``edgeship.signing``);
2. ``module.json`` is byte-for-byte the signed payload (no edits after signing);
3. the payload is a valid manifest of a known schema version;
4. every listed artifact exists and has its digest and size;
5. schemaVersion 2: every part is in ``parts/<hex>`` with its digest and size;
6. no file in the directory is missing from the lists (nothing unsigned rides along).

A device that fetched a version 2 module's parts, not its bundle, has a folder of
``module.json``, the envelope and the parts its runtime needs:
:func:`verify_parts_dir` checks that one (1-3, then each part present as in 5, and
nothing else there); the runtime refuses to assemble from a part that is missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.errors import ManifestError, SignatureError
from edgeship.modules.plain import ENVELOPE_FILE, MANIFEST_FILE, ArtifactRef, ModuleManifest, Part, parse_manifest
from edgeship.records import record

if TYPE_CHECKING:
    from edgeship.signing import TrustRoot
    from edgeship.workspace import Workspace

__all__ = [
    "ArtifactDigestError",
    "UnlistedFileError",
    "VerifiedModule",
    "file_digest",
    "load_trust_root_file",
    "local_trust_root",
    "verify_module_dir",
    "verify_parts_dir",
]

PARTS_DIR = "parts"  # parts/<hex>: a version 2 module's parts (packager/parts.py)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # bytes; a larger manifest or envelope is refused unread
CHUNK = 1 << 20  # bytes read per step when hashing


class ArtifactDigestError(ManifestError):
    """An artifact is missing or its bytes differ from the signed digest."""


class UnlistedFileError(ManifestError):
    """The module directory holds a file the signed manifest does not list."""


@record
class VerifiedModule:
    """A verified module directory; its manifest is the plain one (``edgeship.modules.plain``)."""

    directory: Path
    manifest: ModuleManifest

    def artifact(self, relpath: str) -> Path:
        return self.directory / relpath


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _read_small(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ManifestError(f"{path.parent} is not a module directory: {what} {path.name} is missing.")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes; refusing to read it.")
    return path.read_bytes()


def local_trust_root(workspace: Workspace) -> TrustRoot:
    """The trust a packaging workspace places in itself: its own release keys, threshold 1.

    Used by ``module verify`` when no ``--trust-root`` is given. Only the ``release``
    role is consulted for modules; the other roles are filled with the workspace's
    root/hub keys when it has them, else with the release keys, and this root is never
    written anywhere or given to a device.
    """
    from edgeship.signing import Keyring, TrustRoot

    keys = Keyring(workspace).list()
    by_role = {role: [k.public_key for k in keys if k.role == role] for role in ("root", "release", "hub")}
    if not by_role["release"]:
        raise SignatureError(
            f"The workspace {workspace.root} has no release key to verify with; pass --trust-root FILE "
            "or create one with 'edgeship keys create --role release'."
        )
    return TrustRoot.build(
        root=by_role["root"] or by_role["release"],
        release=by_role["release"],
        hub=by_role["hub"] or by_role["release"],
    )


def load_trust_root_file(path: Path) -> TrustRoot:
    """A trust root as ``edgeship keys trust-root`` writes it (a self-signed envelope)."""
    from edgeship.signing import load_trust_root

    if not path.is_file():
        raise SignatureError(f"Trust root file {path} does not exist; write one with 'edgeship keys trust-root'.")
    return load_trust_root(_read_small(path, "the trust root"))


def verify_module_dir(
    directory: Path,
    trust_root: TrustRoot,
    *,
    digest_of: Callable[[Path], tuple[str, int]] = file_digest,
) -> VerifiedModule:
    """Verify a module directory against ``trust_root``.

    Returns the verified manifest; raises a SignatureError or ManifestError subclass
    naming the first problem found. ``digest_of`` gives a file's ``(sha256:<hex>, size)``;
    the default reads the file. The agent passes one that answers from what its blob
    cache hashed while downloading the very same file (same inode, size and mtime), so
    a 50 MB bundle is hashed once, not twice; it must never answer for bytes it did
    not hash.
    """
    directory = Path(directory)
    manifest = _signed_manifest(directory, trust_root)
    listed = {ref.path: ref for ref in manifest.files}
    for ref in manifest.files:
        _check_file(directory, ref.path, ref.digest, ref.size, digest_of)
    parts = _part_paths(manifest)
    for rel, part in parts.items():
        _check_file(directory, rel, part.digest, part.size, digest_of)
    _no_unlisted(directory, set(listed) | set(parts))
    _check_pointers(manifest, listed)
    return VerifiedModule(directory, manifest)


def verify_parts_dir(
    directory: Path,
    trust_root: TrustRoot,
    *,
    digest_of: Callable[[Path], tuple[str, int]] = file_digest,
) -> VerifiedModule:
    """Verify a device's folder of a version 2 module: the signature, and each part it holds.

    Parts the device did not fetch (a layer its engine has, a wheel of a venv it has) may
    be missing; each one present must have its signed digest and size, and nothing else
    may be there.
    """
    directory = Path(directory)
    manifest = _signed_manifest(directory, trust_root)
    if manifest.parts is None:
        raise ManifestError(f"{directory / MANIFEST_FILE} is schemaVersion 1: it has no parts to install from.")
    parts = _part_paths(manifest)
    for rel, part in parts.items():
        if (directory / rel).is_file():
            _check_file(directory, rel, part.digest, part.size, digest_of)
    _no_unlisted(directory, set(parts))
    return VerifiedModule(directory, manifest)


def _signed_manifest(directory: Path, trust_root: TrustRoot) -> ModuleManifest:
    from edgeship.signing import MODULE_PAYLOAD_TYPE, verify_envelope

    envelope = _read_small(directory / ENVELOPE_FILE, "the signature envelope")
    manifest_bytes = _read_small(directory / MANIFEST_FILE, "the manifest")
    try:
        payload = verify_envelope(envelope, trust_root, "release", MODULE_PAYLOAD_TYPE)
    except SignatureError as exc:
        raise type(exc)(f"Module signature check failed for {directory}: {exc}") from exc
    if payload != manifest_bytes:
        raise ManifestError(
            f"{directory / MANIFEST_FILE} differs from the signed manifest in {ENVELOPE_FILE}; "
            "it was edited after signing (re-package the module)."
        )
    return parse_manifest(payload, source=str(directory / MANIFEST_FILE))


def _part_paths(manifest: ModuleManifest) -> dict[str, Part]:
    """``parts/<hex>`` -> part, for every part of a version 2 manifest (none for version 1)."""
    if manifest.parts is None:
        return {}
    return {f"{PARTS_DIR}/{p.digest.removeprefix('sha256:')}": p for p in manifest.parts.all()}


def _check_file(
    directory: Path, rel: str, digest: str, size: int, digest_of: Callable[[Path], tuple[str, int]]
) -> None:
    path = directory / rel
    if not path.is_file():
        raise ArtifactDigestError(f"Artifact {rel} listed in the manifest is missing from {directory}.")
    got, got_size = digest_of(path)
    if got != digest or got_size != size:
        raise ArtifactDigestError(
            f"Artifact {rel} does not match the signed manifest (sha256 {got[7:19]}…, "
            f"{got_size} bytes; signed {digest[7:19]}…, {size} bytes): it was altered or corrupted."
        )


def _no_unlisted(directory: Path, listed: set[str]) -> None:
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in listed and rel not in (MANIFEST_FILE, ENVELOPE_FILE):
            raise UnlistedFileError(
                f"{rel} in {directory} is not covered by the signed manifest; remove it or re-package."
            )


def _check_pointers(manifest: ModuleManifest, listed: dict[str, ArtifactRef]) -> None:
    """The bundle and image archive the manifest names must be among the signed files."""
    bundle = listed.get(manifest.bundle.path)
    if bundle is None or bundle.digest != manifest.bundle.digest:
        raise ArtifactDigestError(
            f"The manifest's bundle {manifest.bundle.path} is not among its signed files with the same digest."
        )
    archive = manifest.image.archive if manifest.image else None
    signed = listed.get(archive.path) if archive is not None else None
    if archive is not None and (signed is None or signed.digest != archive.digest):
        raise ArtifactDigestError(
            f"The manifest's image archive {archive.path} is not among its signed files with the same digest."
        )
