"""An in-memory-ish module world: small signed module directories for attack tests.

Like python-tuf's repository simulator, it builds signed modules from plain data so
every attack is one short named test; no packager, wheelhouse or Docker involved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

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
from edgeship.signing import MODULE_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class ModuleWorld:
    """Release keys, a trust root over them, and a factory of signed module directories."""

    release: list[Signer] = field(default_factory=lambda: [Signer.generate(name="release-1")])
    root_key: Signer = field(default_factory=lambda: Signer.generate(name="root"))
    hub_key: Signer = field(default_factory=lambda: Signer.generate(name="hub"))
    threshold: int = 1

    def trust_root(self) -> TrustRoot:
        return TrustRoot.build(
            root=[self.root_key.public_key],
            release=[s.public_key for s in self.release],
            hub=[self.hub_key.public_key],
            release_threshold=self.threshold,
        )

    def write_module(
        self,
        directory: Path,
        *,
        artifacts: dict[str, bytes] | None = None,
        signers: list[Signer] | None = None,
        omit_from_list: str | None = None,
    ) -> ModuleManifest:
        files = artifacts or {
            "bundle.tar": b"bundle-bytes" * 100,
            "image.tar": b"image-bytes" * 100,
            "targets/aks.yaml": b"kind: Deployment\n",
        }
        directory.mkdir(parents=True, exist_ok=True)
        refs = []
        for rel, data in sorted(files.items()):
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if rel != omit_from_list:
                refs.append(ArtifactRef(path=rel, digest=_digest(data), size=len(data)))
        bundle = files["bundle.tar"]
        image = files.get("image.tar")
        manifest = ModuleManifest(
            name="digits",
            version=1,
            models=[ModelPin(name="digits", version=1, digest=_digest(b"model"), framework="onnx")],
            entryScript="score.py",
            sourceDirectory="src",
            environment=EnvironmentRef(lockDigest=_digest(b"lock"), python="3.11"),
            bundle=BundleRef(digest=_digest(bundle), size=len(bundle)),
            image=(
                ImageRef(
                    id=_digest(b"config"),
                    tag="edgeship/digits:1",
                    baseImage="python:3.11-slim",
                    archive=ArtifactRef(path="image.tar", digest=_digest(image), size=len(image)),
                )
                if image is not None
                else None
            ),
            files=refs,
        )
        payload = manifest.to_bytes()
        (directory / MANIFEST_FILE).write_bytes(payload)
        envelope = sign_envelope(payload, MODULE_PAYLOAD_TYPE, signers if signers is not None else self.release)
        (directory / ENVELOPE_FILE).write_text(envelope.to_json())
        return manifest

