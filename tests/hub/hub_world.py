"""Keys, a trust root and small signed module directories for the hub's tests.

Like python-tuf's repository simulator: modules are built from plain data (no
packager, wheelhouse or Docker), so a test says only what differs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.hub.service import HubService, Outgoing
from edgeship.hub.store import HubStore
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
from edgeship.signing import MODULE_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope

__all__ = ["HubWorld"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class HubWorld:
    """Release, hub and root keys; a factory of signed modules; a service over a store URL."""

    root: Path
    release: Signer = field(default_factory=lambda: Signer.generate(name="release"))
    hub_key: Signer = field(default_factory=lambda: Signer.generate(name="hub"))
    root_key: Signer = field(default_factory=lambda: Signer.generate(name="root"))
    published: list[Outgoing] = field(default_factory=list)

    def trust_root(self) -> TrustRoot:
        return TrustRoot.build(
            root=[self.root_key.public_key], release=[self.release.public_key], hub=[self.hub_key.public_key]
        )

    def service(self, url: str) -> HubService:
        return HubService(
            HubStore(url),
            BlobStore(self.root / "blobs", self.root / "tmp"),
            self.trust_root(),
            [self.hub_key],
            publish=self.published.extend,
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
