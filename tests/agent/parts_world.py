"""Signed schemaVersion 2 modules and an in-process device for the part tests (ADR 0028).

- :func:`signed_module`: what ``edgeship package`` writes for a no-code model (bundle,
  ``parts/``, optional image parts), signed by a release key; ``schema=1`` leaves the
  parts out (the bundle path, as before).
- :func:`small_wheelhouse`: a folder of two small, valid-looking wheels, for tests that
  never build a venv (fetching, verifying, collecting).
- :class:`Device`: the agent's real reconcile step (state, runtime, blob and part caches,
  executor, runner, reconciler) in this process, fed signed documents directly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from blob_server import BlobServer

from edgeship.agent.decide.accept import AcceptedDocument, accept_document
from edgeship.agent.decide.plan import CurrentState, plan
from edgeship.agent.decide.runner import PlanRunner
from edgeship.agent.execute import RuntimeExecutor
from edgeship.agent.fetch.download import BlobCache
from edgeship.agent.fetch.parts import PartCache
from edgeship.agent.reconcile import Reconciler, desired_from
from edgeship.agent.runtimes.base import ModuleRuntime
from edgeship.agent.runtimes.process import ProcessRuntime
from edgeship.agent.state.store import StateStore
from edgeship.deployment import ModuleBlobs, ModuleEntry, build_document, sign_document
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
from edgeship.modules.plain import parse_manifest
from edgeship.modules.verify import file_digest
from edgeship.packager.bundle import build_bundle
from edgeship.packager.parts import PARTS_DIR, build_parts, image_parts
from edgeship.registry import Model
from edgeship.signing import MODULE_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope
from edgeship.workspace import Workspace

__all__ = ["CHUNK", "Device", "Keys", "PartsWorld", "changed", "model_bytes", "signed_module", "small_wheelhouse"]

CHUNK = 64 * 1024  # bytes: small chunks, so a model of a few hundred KiB has several


def model_bytes(seed: int, size: int = 6 * CHUNK + 1000) -> bytes:
    return random.Random(seed).randbytes(size)


def changed(data: bytes, at: int) -> bytes:
    """``data`` with 100 bytes changed at offset ``at`` (one chunk's worth of change)."""
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + 100]) + data[at + 100:]


@dataclass
class Keys:
    release: Signer = field(default_factory=lambda: Signer.generate(name="release"))
    hub: Signer = field(default_factory=lambda: Signer.generate(name="hub"))
    root: Signer = field(default_factory=lambda: Signer.generate(name="root"))

    def trust_root(self) -> TrustRoot:
        return TrustRoot.build(root=[self.root.public_key], release=[self.release.public_key],
                               hub=[self.hub.public_key])  # fmt: skip


def small_wheelhouse(folder: Path, *, extra: str = "") -> Path:
    """Two tiny installable wheels; ``extra`` changes the second one's bytes (another lock digest)."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist, version, body in (("alpha", "1.0", "a = 1\n"), ("beta", "2.0", f"b = 2{extra}\n")):
        info = f"{dist}-{version}.dist-info"
        files = {
            f"{dist}.py": (body + "# padding\n" * 2000).encode(),
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
            f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        record = "".join(
            f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
            for name, data in files.items()
        ) + f"{info}/RECORD,,\n"
        files[f"{info}/RECORD"] = record.encode()
        with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as wheel:
            for name, data in files.items():
                wheel.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return folder


def signed_module(
    out: Path,
    *,
    name: str,
    version: int,
    models: list[Model],
    wheelhouse: Path,
    keys: Keys,
    schema: int = 2,
    chunk_size: int = 4 * 1024 * 1024,
    image: tuple[Path, str, str] | None = None,
) -> Path:
    """A signed module directory at ``out``; ``image`` is ``(docker save archive, image id, tag)``."""
    out.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(out / "bundle.tar", models=models, wheelhouse=wheelhouse)
    files = [ArtifactRef(path="bundle.tar", digest=bundle.digest, size=bundle.size)]
    image_ref = None
    if image is not None:
        archive, image_id, tag = image
        (out / "image.tar").write_bytes(archive.read_bytes())
        digest, size = file_digest(out / "image.tar")
        files.append(ArtifactRef(path="image.tar", digest=digest, size=size))
        image_ref = ImageRef(id=image_id, tag=tag, baseImage="edgeship-base:bookworm-py3", archive=files[-1])
    manifest = ModuleManifest(
        name=name,
        version=version,
        models=[ModelPin(name=m.name, version=m.version, digest=m.digest, framework="onnx") for m in models],
        environment=EnvironmentRef(lockDigest=bundle.env_lock_digest, python="3.11"),
        bundle=BundleRef(digest=bundle.digest, size=bundle.size),
        image=image_ref,
        files=files,
    )
    if schema == 2:
        parts = build_parts(bundle.path, out / PARTS_DIR, chunk_size=chunk_size)
        if image_ref is not None:
            parts = parts.model_copy(update={"image": image_parts(out / "image.tar", out / PARTS_DIR, image_ref.id)})
        manifest = ModuleManifest.from_bytes(
            manifest.model_copy(update={"schema_version": 2, "parts": parts}).to_bytes()
        )
    payload = manifest.to_bytes()
    (out / MANIFEST_FILE).write_bytes(payload)
    (out / ENVELOPE_FILE).write_text(sign_envelope(payload, MODULE_PAYLOAD_TYPE, [keys.release]).to_json())
    return out


def serve_module(directory: Path, blob_root: Path) -> None:
    """Put the module's bundle, image archive and parts where a :class:`BlobServer` serves them (by hex)."""
    blob_root.mkdir(parents=True, exist_ok=True)
    for path in [directory / "bundle.tar", directory / "image.tar", *sorted((directory / PARTS_DIR).glob("*"))]:
        if path.is_file():
            hexdigest = hashlib.sha256(path.read_bytes()).hexdigest()
            (blob_root / hexdigest).write_bytes(path.read_bytes())


class Device:
    """The agent's reconcile step in-process: a real runtime, caches, executor and reconciler."""

    def __init__(self, data: Path, hub_url: str, keys: Keys, runtime: ModuleRuntime, *, ports: tuple[int, int],
                 part_cache_bytes: int = 4 << 30) -> None:  # fmt: skip
        self.keys = keys
        self.device_id = "dev-1"
        self.state = StateStore(data)
        self.runtime = runtime
        self.blobs = BlobCache(data / "blobs", hub_url)
        self.parts = PartCache(BlobCache(data / "parts", hub_url), max_bytes=part_cache_bytes)
        self.executor = RuntimeExecutor(runtime, self.state, self.blobs, keys.trust_root(), data / "modules",
                                        port_range=ports, health_timeout=60.0, parts=self.parts)  # fmt: skip
        self.reports: list[dict[str, Any]] = []
        self.reconciler = Reconciler(
            device_id=self.device_id, trust_root=keys.trust_root(), state=self.state, runtime=runtime,
            executor=self.executor, runner=PlanRunner(self.executor, time.monotonic), publish=self.reports.append,
            now=lambda: datetime.now(timezone.utc),
        )  # fmt: skip
        self.sequence = 0

    @property
    def received(self) -> int:
        """Bytes of blob and part bodies this device received from hosts."""
        return self.blobs.received + self.parts.blobs.received

    def deploy(self, modules: dict[str, Path]) -> dict[str, Any]:
        """Sign a document with ``modules`` (name -> module directory) and reconcile once; the report."""
        self.sequence += 1
        entries = {}
        for name, directory in modules.items():
            manifest = json.loads((directory / MANIFEST_FILE).read_bytes())
            envelope = json.loads((directory / ENVELOPE_FILE).read_text())
            bundle = f"/blobs/{manifest['bundle']['digest']}"
            entries[name] = ModuleEntry(module=envelope, blobs=ModuleBlobs(bundle=bundle))
        doc = build_document(device_id=self.device_id, sequence=self.sequence, modules=entries,
                             issued_at=datetime.now(timezone.utc), ttl=timedelta(days=1))  # fmt: skip
        raw = sign_document(doc, [self.keys.hub]).to_json().encode()
        self.reconciler.offer(raw)
        self.reconciler.reconcile()
        return self.reports[-1] if self.reports else {}


class PartsWorld:
    """Keys, a workspace, tiny wheels and a real blob host counting what it sends; modules served by digest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = Keys()
        self.ws = Workspace.at(root / "ws")
        self.ws.create()
        self.wheels = small_wheelhouse(root / "wheels")
        self.server = BlobServer(root / "served")
        self.url = f"http://127.0.0.1:{self.server.httpd.server_address[1]}"
        self.versions: dict[str, int] = {}
        self.registered: dict[tuple[str, str], Model] = {}

    def module(self, name: str, model: bytes, *, schema: int = 2, wheels: Path | None = None,
               image: tuple[Path, str, str] | None = None) -> Path:
        """The next version of ``name`` holding ``model``, signed and served; ``image``: see :func:`signed_module`."""
        version = self.versions[name] = self.versions.get(name, 0) + 1
        key = (name, hashlib.sha256(model).hexdigest())
        if key not in self.registered:  # the same bytes are the same model version
            source = self.root / "models" / f"{name}-{version}" / f"{name}.onnx"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(model)
            self.registered[key] = Model.register(self.ws, source, name)
        registered = self.registered[key]
        out = signed_module(self.root / "out" / name / str(version), name=name, version=version, models=[registered],
                            wheelhouse=wheels or self.wheels, keys=self.keys, schema=schema, chunk_size=CHUNK,
                            image=image)
        serve_module(out, self.server.root)
        return out

    def executor(self, data: Path, *, part_cache_bytes: int = 1 << 30, runtime: ModuleRuntime | None = None,
                 ports: tuple[int, int] = (0, 0)) -> RuntimeExecutor:
        return RuntimeExecutor(
            runtime or ProcessRuntime(data / "runtime"), StateStore(data), BlobCache(data / "blobs", self.url),
            self.keys.trust_root(), data / "modules", port_range=ports, health_timeout=30.0,
            parts=PartCache(BlobCache(data / "parts", self.url), max_bytes=part_cache_bytes),
        )  # fmt: skip

    def accept(self, modules: dict[str, Path], sequence: int) -> AcceptedDocument:
        """A hub-signed document naming ``modules`` (name -> module directory), accepted as the agent does."""
        entries = {}
        for name, directory in modules.items():
            manifest = parse_manifest((directory / MANIFEST_FILE).read_bytes())
            envelope = json.loads((directory / ENVELOPE_FILE).read_text())
            entries[name] = ModuleEntry(module=envelope, blobs=ModuleBlobs(bundle=f"/blobs/{manifest.bundle.digest}"))
        doc = build_document(device_id="dev-1", sequence=sequence, modules=entries,
                             issued_at=datetime.now(timezone.utc))  # fmt: skip
        raw = sign_document(doc, [self.keys.hub]).to_json().encode()
        return accept_document(raw, self.keys.trust_root(), "dev-1", None, datetime.now(timezone.utc))

    def fetch_and_verify(self, executor: RuntimeExecutor, modules: dict[str, Path], sequence: int) -> None:
        """What the agent does for a new document up to ``install``: check space, download, verify."""
        accepted = self.accept(modules, sequence)
        executor.document = accepted
        for command in plan(desired_from(accepted), CurrentState(datetime.now(timezone.utc))):
            if command.kind in ("check_space", "download", "verify"):
                executor.execute(command)

    def mark(self) -> int:
        return len(self.server.bodies)

    def served_since(self, mark: int) -> tuple[int, list[str]]:
        """(body bytes sent, digests served) since answer number ``mark``."""
        bodies = self.server.bodies[mark:]
        return sum(sent for _path, sent in bodies), [path.removeprefix("/blobs/") for path, _sent in bodies]
