"""Keys, a trust root and small signed module directories for the hub's tests.

Like python-tuf's repository simulator: modules are built from plain data (no
packager, wheelhouse or Docker), so a test says only what differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from memory_link import MemoryLink

from edgeship.hub.services import REEVALUATE_BATCH, DeviceLink, HubServices, Outgoing
from edgeship.hub.services.hub import utcnow
from edgeship.hub.store import HubStore
from edgeship.hub.trust import TrustRootFiles
from edgeship.modules.manifest import (
    ENVELOPE_FILE,
    MANIFEST_FILE,
    ArtifactRef,
    BundleRef,
    EnvironmentRef,
    ImageRef,
    ModelPin,
    ModuleManifest,
)
from edgeship.registry.blobs import BlobStore
from edgeship.signing import MODULE_PAYLOAD_TYPE, Signer, SignerLike, TrustRoot, sign_envelope

__all__ = ["HubWorld"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class HubWorld:
    """Release, hub and root keys; a factory of signed modules; the hub's services over a store URL.

    The services send to :attr:`link` (a :class:`MemoryLink`) unless a test passes its own.
    """

    root: Path
    release: Signer = field(default_factory=lambda: Signer.generate(name="release"))
    hub_key: Signer = field(default_factory=lambda: Signer.generate(name="hub"))
    root_key: Signer = field(default_factory=lambda: Signer.generate(name="root"))
    link: MemoryLink = field(default_factory=MemoryLink)

    @property
    def published(self) -> list[Outgoing]:
        """Every document the services built by :meth:`services` published (unless given another link)."""
        return self.link.documents

    def trust_root(self) -> TrustRoot:
        return TrustRoot.build(
            root=[self.root_key.public_key], release=[self.release.public_key], hub=[self.hub_key.public_key]
        )

    def services(
        self,
        url: str,
        *,
        link: DeviceLink | None = None,
        clock: Callable[[], datetime] = utcnow,
        trust_root: TrustRoot | None = None,
        trust_files: TrustRootFiles | None = None,
        hub_keys: Callable[[], Sequence[SignerLike]] | None = None,
        batch: int = REEVALUATE_BATCH,
    ) -> HubServices:
        """The hub's services over ``url``, wired as ``HubServer`` wires them, with this world's keys."""
        return HubServices.build(
            HubStore(url),
            BlobStore(self.root / "blobs", self.root / "tmp"),
            trust_root or self.trust_root(),
            [self.hub_key],
            link if link is not None else self.link,
            clock=clock,
            trust_files=trust_files,
            hub_keys=hub_keys,
            batch=batch,
        )

    def module(self, name: str, version: int, *, image: bool = True, signer: Signer | None = None) -> Path:
        """A signed module directory ``name``/``version`` with a bundle (and an image archive)."""
        directory = self.root / "modules" / name / str(version)
        bundle = f"bundle of {name}:{version}\n".encode() * 64
        files = {"bundle.tar": bundle}
        if image:
            files["image.tar"] = f"image of {name}:{version}\n".encode() * 64
        directory.mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            (directory / rel).write_bytes(data)
        refs = [ArtifactRef(path=rel, digest=_digest(data), size=len(data)) for rel, data in sorted(files.items())]
        manifest = ModuleManifest(
            name=name,
            version=version,
            models=[ModelPin(name=name, version=version, digest=_digest(name.encode()), framework="onnx")],
            environment=EnvironmentRef(lockDigest=_digest(b"lock"), python="3.11"),
            bundle=BundleRef(digest=_digest(bundle), size=len(bundle)),
            image=(
                ImageRef(
                    id=_digest(b"config"),
                    tag=f"edgeship/{name}:{version}",
                    baseImage="python:3.11-slim",
                    archive=next(r for r in refs if r.path == "image.tar"),
                )
                if image
                else None
            ),
            files=refs,
        )
        payload = manifest.to_bytes()
        (directory / MANIFEST_FILE).write_bytes(payload)
        envelope = sign_envelope(payload, MODULE_PAYLOAD_TYPE, [signer or self.release])
        (directory / ENVELOPE_FILE).write_text(envelope.to_json())
        return directory
