"""Bytes at the device for model-only updates: the bundle path (schemaVersion 1) against parts (2), ADR 0028.

Modules are built as ``edgeship package`` builds them (one wheelhouse from the digits
example's requirements, a bundle with its entry script, an image on the local base
image, parts from both) and signed; each version is also signed as a schemaVersion 1
manifest over the same bundle and image (the "before"). A device is the agent's own
code in this process (accept, plan, ``RuntimeExecutor`` with the process or Docker
runtime, the blob and part caches) fetching from a real HTTP server with Range; the
bytes are what its fetchers received (``BlobCache.received``).

Models: the digits example (trained by ``examples/sklearn-digits/train.py``, the update
retrained with another seed) and a deterministic 50 MB model file (numpy's generator,
seed fixed; the update is a new file, and a "partial" update changes 1 MiB of it).
Target (issue 16): a model-only update moves at most 1.1 x the changed files + 64 KiB.

    python benchmarks/agent/parts.py --json-out benchmarks/agent/results/parts-2026-12-05.json
    python benchmarks/agent/parts.py --no-docker        # the process runtime only
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeship.agent.decide.accept import accept_document
from edgeship.agent.decide.plan import CurrentState, plan
from edgeship.agent.execute import RuntimeExecutor
from edgeship.agent.fetch.download import BlobCache
from edgeship.agent.fetch.parts import PartCache
from edgeship.agent.reconcile import desired_from
from edgeship.agent.runtimes.process import ProcessRuntime
from edgeship.agent.state.store import StateStore
from edgeship.deployment import ModuleBlobs, ModuleEntry, build_document, sign_document
from edgeship.modules.manifest import ArtifactRef, BundleRef, EnvironmentRef, ImageRef, ModelPin, ModuleManifest
from edgeship.packager.bundle import build_bundle
from edgeship.packager.config import load_inference_config
from edgeship.packager.parts import PARTS_DIR, build_parts, image_parts
from edgeship.packager.wheelhouse import build_wheelhouse
from edgeship.registry import Model
from edgeship.signing import MODULE_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope
from edgeship.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "sklearn-digits"
BASE_IMAGE = os.environ.get("EDGESHIP_BENCH_BASE_IMAGE", "edgeship-base:bookworm-py3")
BIG = 50 * 1000 * 1000  # bytes of the large model
CONSOLE = Console(stderr=True)


class Host:
    """A blob host: ``root/<hex>`` at ``/blobs/sha256:<hex>``, with single ``bytes=N-`` ranges."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = host.root / self.path.removeprefix("/blobs/sha256:")
                if not self.path.startswith("/blobs/sha256:") or not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                rng = self.headers.get("Range") or ""
                start = int(rng[6:-1]) if rng.startswith("bytes=") and rng.endswith("-") else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                with path.open("rb") as handle:
                    handle.seek(start)
                    shutil.copyfileobj(handle, self.wfile, 1 << 20)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: Path) -> None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        target = self.root / digest.hexdigest()
        if not target.exists():
            os.link(path, target)


class Release:
    """Builds and signs modules the way ``edgeship package`` does, from one wheelhouse."""

    def __init__(self, root: Path, *, docker: bool) -> None:
        self.root = root
        self.ws = Workspace.at(root / "ws")
        self.ws.create()
        self.release, self.hub, self.root_key = (Signer.generate(name=n) for n in ("release", "hub", "root"))
        self.trust = TrustRoot.build(root=[self.root_key.public_key], release=[self.release.public_key],
                                     hub=[self.hub.public_key])  # fmt: skip
        self.docker = docker
        self.wheelhouse = root / "wheelhouse"
        requirements = load_inference_config(DIGITS / "inferenceconfig.json").requirements
        build_wheelhouse(list(requirements), self.wheelhouse, cache_dir=Path.home() / ".cache" / "edgeship" / "wheels",
                         console=CONSOLE)  # fmt: skip

    def module(self, name: str, version: int, model_file: Path, *, image: bool) -> tuple[Path, Path]:
        """``(v2 module folder, v1 module folder)`` of one build: the same bundle and image, signed twice."""
        model = Model.register(self.ws, model_file, name)
        out = self.root / "modules" / name / str(version)
        out.mkdir(parents=True)
        bundle = build_bundle(out / "bundle.tar", models=[model], wheelhouse=self.wheelhouse, source_dir=DIGITS,
                              entry_script=DIGITS / "score.py", exclude=[out])  # fmt: skip
        files = [ArtifactRef(path="bundle.tar", digest=bundle.digest, size=bundle.size)]
        image_ref = None
        if image and self.docker:
            from edgeship.packager.image import build_image

            tag = f"edgeship-bench/{name}:{version}"
            built = build_image(bundle.path, tag=tag, base_image=BASE_IMAGE, archive_path=out / "image.tar",
                                bundle_digest=bundle.digest, console=CONSOLE)  # fmt: skip
            assert built.archive_digest is not None
            files.append(ArtifactRef(path="image.tar", digest=built.archive_digest, size=built.size))
            image_ref = ImageRef(id=built.id, tag=tag, baseImage=BASE_IMAGE, archive=files[-1])
        v1 = ModuleManifest(
            name=name, version=version,
            models=[ModelPin(name=model.name, version=model.version, digest=model.digest, framework="onnx")],
            entryScript=bundle.entry_script.removeprefix("src/") if bundle.entry_script else None,
            sourceDirectory="src", environment=EnvironmentRef(lockDigest=bundle.env_lock_digest, python="3.11"),
            bundle=BundleRef(digest=bundle.digest, size=bundle.size), image=image_ref, files=files,
        )  # fmt: skip
        parts = build_parts(bundle.path, out / PARTS_DIR)
        if image_ref is not None:
            parts = parts.model_copy(update={"image": image_parts(out / "image.tar", out / PARTS_DIR, image_ref.id)})
        v2 = ModuleManifest.from_bytes(v1.model_copy(update={"schema_version": 2, "parts": parts}).to_bytes())
        old = self.root / "modules-v1" / name / str(version)
        old.mkdir(parents=True)
        for folder, manifest in ((out, v2), (old, v1)):
            payload = manifest.to_bytes()
            (folder / "module.json").write_bytes(payload)
            envelope = sign_envelope(payload, MODULE_PAYLOAD_TYPE, [self.release])
            (folder / "module.dsse.json").write_text(envelope.to_json())
        return out, old

    def document(self, modules: dict[str, Path], sequence: int) -> bytes:
        entries = {}
        for name, folder in modules.items():
            manifest = json.loads((folder / "module.json").read_bytes())
            envelope = json.loads((folder / "module.dsse.json").read_text())
            image = f"/blobs/{manifest['image']['archive']['digest']}" if "image" in manifest else None
            blobs = ModuleBlobs(bundle=f"/blobs/{manifest['bundle']['digest']}", image=image)
            entries[name] = ModuleEntry(module=envelope, blobs=blobs)
        doc = build_document(device_id="dev-1", sequence=sequence, modules=entries,
                             issued_at=datetime.now(timezone.utc))  # fmt: skip
        return sign_document(doc, [self.hub]).to_json().encode()


class Device:
    """The agent's fetch path with one runtime; ``received`` counts body bytes from the host."""

    def __init__(self, data: Path, host: Host, release: Release, runtime: Any) -> None:
        self.release = release
        self.blobs = BlobCache(data / "blobs", host.url)
        self.parts = PartCache(BlobCache(data / "parts", host.url))
        self.executor = RuntimeExecutor(runtime, StateStore(data), self.blobs, release.trust, data / "modules",
                                        port_range=(31990, 31999), health_timeout=60.0, parts=self.parts)  # fmt: skip
        self.sequence = 0
        self.installed: list[str] = []

    @property
    def received(self) -> int:
        return self.blobs.received + self.parts.blobs.received

    def apply(self, modules: dict[str, Path], *, install: bool = False) -> tuple[int, float]:
        """Fetch (and verify; install when asked) ``modules``; (bytes received, seconds)."""
        self.sequence += 1
        before, began = self.received, time.monotonic()
        now = datetime.now(timezone.utc)
        raw = self.release.document(modules, self.sequence)
        accepted = accept_document(raw, self.release.trust, "dev-1", None, now)
        self.executor.document = accepted
        kinds = ("check_space", "download", "verify", "install") if install else ("check_space", "download", "verify")
        for command in plan(desired_from(accepted), CurrentState(now)):
            if command.kind in kinds:
                self.executor.execute(command)
                if command.kind == "install":
                    self.installed.append(command.service)
        return self.received - before, time.monotonic() - began


def digits_models(folder: Path) -> tuple[Path, Path]:
    """The digits example model and a retrained one (another seed): a real model-only update."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import train\n"
        "from pathlib import Path\n"
        "train.SEED = int(sys.argv[3]); x, xt, y, yt = train.load_split()\n"
        "train.convert(train.train(x, y), Path(sys.argv[2]))\n"
    )
    paths = []
    for seed in (0, 7):
        path = folder / f"digits-seed{seed}" / "digits.onnx"
        path.parent.mkdir(parents=True)
        subprocess.run([sys.executable, "-c", script, str(DIGITS), str(path), str(seed)], check=True)
        paths.append(path)
    return paths[0], paths[1]


def big_models(folder: Path) -> tuple[Path, Path, Path]:
    """A 50 MB model, a new one, and the first with 1 MiB changed in its middle (deterministic)."""
    import numpy as np

    out = []
    for seed in (1, 2):
        path = folder / f"big-seed{seed}" / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(np.random.default_rng(seed).bytes(BIG))
        out.append(path)
    data = bytearray(out[0].read_bytes())
    middle = BIG // 2
    data[middle:middle + (1 << 20)] = np.random.default_rng(3).bytes(1 << 20)
    partial = folder / "big-partial" / "model.onnx"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(bytes(data))
    return out[0], out[1], partial


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-out", type=Path, help="write the results here")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker runtime")
    args = parser.parse_args()
    started = load()
    rows: list[dict[str, Any]] = []
    docker_client = None
    if not args.no_docker:
        import docker

        docker_client = docker.from_env(timeout=600)
    with tempfile.TemporaryDirectory(prefix="bench-parts-") as tmp:
        root = Path(tmp)
        release = Release(root, docker=docker_client is not None)
        host = Host(root / "served")
        d1, d2 = digits_models(root / "models")
        b1, b2, bp = big_models(root / "models")
        builds: dict[str, tuple[Path, Path]] = {}
        for key, name, version, path, image in (("d1", "digits", 1, d1, True), ("d2", "digits", 2, d2, True),
                                                ("b1", "big", 1, b1, True), ("b2", "big", 2, b2, True),
                                                ("bp", "big", 3, bp, False)):  # fmt: skip
            CONSOLE.log(f"building {name}:{version}")
            builds[key] = release.module(name, version, path, image=image)
            for folder in builds[key]:
                for file in [folder / "bundle.tar", folder / "image.tar", *(folder / PARTS_DIR).glob("*")]:
                    if file.is_file():
                        host.serve(file)
        sizes = {"d": (d1.stat().st_size, d2.stat().st_size), "b": (BIG, BIG)}
        cases = [("digits", "d1", "d2", sizes["d"][1]), ("50 MB", "b1", "b2", BIG),
                 ("50 MB, 1 MiB changed", "b1", "bp", BIG)]  # fmt: skip
        # -- the process runtime --------------------------------------------------------------
        for label, first, update, changed in cases:
            for schema, index in (("before (v1 bundle)", 1), ("after (v2 parts)", 0)):
                device = Device(root / "dev" / f"p-{label}-{index}", host, release,
                                ProcessRuntime(root / "dev" / f"p-{label}-{index}" / "runtime"))  # fmt: skip
                name = builds[first][0].parent.name
                first_bytes, _ = device.apply({name: builds[first][index]})
                got, seconds = device.apply({name: builds[update][index]})
                rows.append({"runtime": "process", "model": label, "path": schema, "first_install_bytes": first_bytes,
                             "update_bytes": got, "changed_file_bytes": changed, "seconds": round(seconds, 2),
                             "target_bytes": int(1.1 * changed + 65536)})  # fmt: skip
        # a second module with the same wheels: digits installed, then the 50 MB module beside it
        device = Device(root / "dev" / "shared", host, release, ProcessRuntime(root / "dev" / "shared" / "runtime"))
        device.apply({"digits": builds["d1"][0]})
        cached = set(device.parts.cached())
        got, _ = device.apply({"digits": builds["d1"][0], "big": builds["b1"][0]})
        big_manifest = ModuleManifest.from_bytes((builds["b1"][0] / "module.json").read_bytes())
        assert big_manifest.parts is not None
        new = set(device.parts.cached()) - cached
        wheels = {w.digest: w.size for w in big_manifest.parts.wheels}
        rows.append({"runtime": "process", "model": "second module, same wheels", "path": "after (v2 parts)",
                     "update_bytes": got, "wheels_in_module": len(wheels),
                     "wheel_bytes_in_module": sum(wheels.values()),
                     "wheels_fetched": len(new & set(wheels)), "changed_file_bytes": BIG,
                     "target_bytes": int(1.1 * BIG + 65536)})  # fmt: skip
        # -- the Docker runtime ------------------------------------------------------------------
        if docker_client is not None:
            from edgeship.agent.runtimes.docker import DockerRuntime

            for label, first, update, changed in cases[:2]:
                for schema, index in (("before (v1 bundle)", 1), ("after (v2 parts)", 0)):
                    manifests = [ModuleManifest.from_bytes((builds[k][index] / "module.json").read_bytes())
                                 for k in (first, update)]  # fmt: skip
                    for manifest in manifests:  # the device's engine has the base image only
                        if manifest.image is not None:
                            with contextlib.suppress(Exception):
                                docker_client.images.remove(manifest.image.id, force=True)
                    runtime = DockerRuntime(docker_client)
                    device = Device(root / "dev" / f"d-{label}-{index}", host, release, runtime)
                    name = builds[first][0].parent.name
                    first_bytes, _ = device.apply({name: builds[first][index]}, install=True)
                    for service in device.installed:
                        runtime.remove(service)
                        device.executor.forget(service)
                    got, seconds = device.apply({name: builds[update][index]}, install=True)
                    for service in device.installed[1:]:
                        runtime.remove(service)
                    rows.append({"runtime": "docker", "model": label, "path": schema,
                                 "first_install_bytes": first_bytes, "update_bytes": got,
                                 "changed_file_bytes": changed, "seconds": round(seconds, 2),
                                 "target_bytes": int(1.1 * changed + 65536)})  # fmt: skip
            for key in ("d1", "d2", "b1", "b2"):
                manifest = ModuleManifest.from_bytes((builds[key][0] / "module.json").read_bytes())
                if manifest.image is not None:
                    with contextlib.suppress(Exception):
                        docker_client.images.remove(manifest.image.id, force=True)
        host.httpd.shutdown()
    result = {"load_start": started, "load_end": load(), "rows": rows,
              "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    for row in rows:
        met = "met" if row["update_bytes"] <= row["target_bytes"] else "missed"
        print(f"{row['runtime']:8} {row['model']:28} {row['path']:20} update {row['update_bytes']:>12,} B"
              f"  target {row['target_bytes']:>12,} B  {met}")
    print(f"load average at start {started}, at end {result['load_end']}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
