"""Signed module directories for runtime and deploy tests, built from the packager's pieces.

``build_module`` does what ``edgeship package`` does for a no-code model (bundle,
optional image, manifest, release signature, store), so the runtime tests need
neither config files nor the packaging command. The wheelhouse is built once per
session (in the same folder the packager tests use, so a full run builds it once).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console

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
from edgeship.modules.store import ModuleStore, StoredModule
from edgeship.modules.verify import file_digest
from edgeship.packager.bundle import build_bundle
from edgeship.packager.wheelhouse import build_wheelhouse, manylinux_platforms
from edgeship.registry import Model
from edgeship.signing import MODULE_PAYLOAD_TYPE, Keyring, sign_envelope
from edgeship.workspace import Workspace

__all__ = ["BASE_IMAGE", "MNIST", "QUIET", "V2_REQUEST", "build_module", "session_wheelhouse"]

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
MNIST = TESTS / "data" / "mnist-cntk-opset7.onnx"
V2_REQUEST = ROOT / "examples" / "onnx-mnist" / "v2-request.json"
BASE_IMAGE = os.environ.get("EDGESHIP_TEST_BASE_IMAGE", "edgeship-base:bookworm-py3")
QUIET = Console(quiet=True)


def session_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgeship's scoring runtime as manylinux wheels, built once per session."""
    dest = tmp_path_factory.getbasetemp() / "packager-wheelhouse"
    if not dest.is_dir():
        env = os.environ.get("EDGESHIP_TEST_WHEEL_CACHE")
        cache = Path(env) if env else tmp_path_factory.getbasetemp() / "packager-wheel-cache"
        build_wheelhouse([], dest, cache_dir=cache, platform=manylinux_platforms(), console=QUIET)
    return dest


def build_module(
    ws: Workspace,
    wheelhouse: Path,
    models: list[Model],
    out: Path,
    *,
    name: str = "mnist",
    image_base: str | None = None,
    auth: bool = False,
) -> StoredModule:
    """Package ``models`` (no code) as the next version of module ``name``, signed and stored in ``ws``."""
    store = ModuleStore(ws)
    version = store.reserve(name)
    out.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(out / "bundle.tar", models=models, wheelhouse=wheelhouse)
    files = [ArtifactRef(path="bundle.tar", digest=bundle.digest, size=bundle.size)]
    image = None
    if image_base is not None:
        from edgeship.packager.image import build_image

        tag = f"edgeship-test/{name}:{version}"
        built = build_image(bundle.path, tag=tag, base_image=image_base, archive_path=out / "image.tar", console=QUIET)
        assert built.archive_digest is not None
        archive = ArtifactRef(path="image.tar", digest=built.archive_digest, size=built.size)
        files.append(archive)
        image = ImageRef(id=built.id, tag=tag, baseImage=image_base, archive=archive)
    manifest = ModuleManifest(
        name=name,
        version=version,
        models=[ModelPin(name=m.name, version=m.version, digest=m.digest, framework="onnx") for m in models],
        environment=EnvironmentRef(lockDigest=bundle.env_lock_digest, python="3.11"),
        bundle=BundleRef(digest=bundle.digest, size=bundle.size),
        image=image,
        authEnabled=auth,
        files=files,
    )
    keyring = Keyring(ws)
    if not keyring.list("release"):
        keyring.create("release")
    signer = keyring.signer(keyring.list("release")[0].name)
    payload = manifest.to_bytes()
    (out / MANIFEST_FILE).write_bytes(payload)
    (out / ENVELOPE_FILE).write_text(sign_envelope(payload, MODULE_PAYLOAD_TYPE, [signer]).to_json())
    digest, _ = file_digest(out / MANIFEST_FILE)
    return store.commit(manifest, out, digest)
