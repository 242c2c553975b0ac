"""The agent with ``runtime = "docker"``: a real Docker engine, Mosquitto and an HTTP blob server.

The module carries an image archive; the agent downloads it (digest checked),
``docker load``s it, runs the container with the manifest's limits and a port
mapping, health-checks it, and reports. Removing the module from the document
stops and removes the container. The process runtime path is in
``test_agent_loop.py``; both runtimes pass ``test_runtime_contract.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer, SignedModule, infer
from module_world import BASE_IMAGE, MNIST, QUIET, session_wheelhouse
from parts import need

from edgeship.agent.runtimes.docker import LABEL_MODULE
from edgeship.deployment import ModuleBlobs, ModuleEntry, build_document, sign_document
from edgeship.modules.manifest import ArtifactRef, BundleRef, EnvironmentRef, ImageRef, ModelPin, ModuleManifest
from edgeship.packager.bundle import build_bundle
from edgeship.registry import Model
from edgeship.signing import MODULE_PAYLOAD_TYPE, sign_envelope

pytestmark = [pytest.mark.timeout(1200), pytest.mark.docker, pytest.mark.mosquitto, pytest.mark.slow]

IMAGE_TAG = "edgeship-test/agent-docker:1"


def _docker() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentWorld]:
    root = tmp_path_factory.mktemp("agent-docker")
    blobs = BlobServer(root / "served")
    yield AgentWorld(root, session_wheelhouse(tmp_path_factory), blobs)
    blobs.close()


@pytest.fixture(scope="module")
def image_module(world: AgentWorld) -> Iterator[tuple[SignedModule, str]]:
    """MNIST as a module with a bundle and an image archive, both served as blobs; the image removed after."""
    client = _docker()
    need(client is not None, "a Docker engine")
    from edgeship.packager.image import build_image

    model = Model.register(world.workspace, MNIST, "mnist")
    out = world.root / "built" / "image"
    out.mkdir(parents=True)
    bundle = build_bundle(out / "bundle.tar", models=[model], wheelhouse=world.wheelhouse)
    built = build_image(bundle.path, tag=IMAGE_TAG, base_image=BASE_IMAGE, archive_path=out / "image.tar",
                        console=QUIET)
    assert built.archive_digest is not None
    archive = ArtifactRef(path="image.tar", digest=built.archive_digest, size=built.size)
    manifest = ModuleManifest(
        name="mnist",
        version=1,
        models=[ModelPin(name=model.name, version=model.version, digest=model.digest, framework="onnx")],
        environment=EnvironmentRef(lockDigest=bundle.env_lock_digest, python="3.11"),
        bundle=BundleRef(digest=bundle.digest, size=bundle.size),
        image=ImageRef(id=built.id, tag=IMAGE_TAG, baseImage=BASE_IMAGE, archive=archive),
        files=[ArtifactRef(path="bundle.tar", digest=bundle.digest, size=bundle.size), archive],
    )
    world.blobs.put(bundle.path.read_bytes())
    world.blobs.put((out / "image.tar").read_bytes())
    # The agent must load the image from the archive it downloads, not find it already present.
    client.images.remove(built.id, force=True)
    envelope = sign_envelope(manifest.to_bytes(), MODULE_PAYLOAD_TYPE, [world.release])
    module = SignedModule("mnist", 1, json.loads(envelope.to_json()), manifest, bundle.digest)
    yield module, built.archive_digest
    with contextlib.suppress(Exception):
        client.images.remove(built.id, force=True)


def _document(world: AgentWorld, device_id: str, sequence: int, module: SignedModule | None, image: str) -> bytes:
    entries = {}
    if module is not None:
        entries[module.name] = ModuleEntry(
            module=module.envelope,
            blobs=ModuleBlobs(bundle=f"/blobs/{module.bundle_digest}", image=f"/blobs/{image}"),
        )
    from datetime import datetime, timedelta, timezone

    doc = build_document(device_id=device_id, sequence=sequence, modules=entries,
                         issued_at=datetime.now(timezone.utc), ttl=timedelta(days=1))
    return sign_document(doc, [world.hub_key]).to_json().encode()


def _containers() -> list[Any]:
    client = _docker()
    return [c for c in client.containers.list(all=True) if c.name.startswith("edgeship-mnist")]


def test_the_agent_runs_a_module_as_a_container_and_removes_it(
    world: AgentWorld, image_module: tuple[SignedModule, str], mosquitto: Any, tmp_path: Path
) -> None:
    module, image_digest = image_module
    observer = Observer(mosquitto.port)
    agent = AgentProcess(world, "dev-docker", mosquitto.url, tmp_path / "dev-docker")
    agent.config.write_text(agent.config.read_text().replace('runtime = "process"', 'runtime = "docker"'))
    agent.start()
    try:
        observer.desired("dev-docker", _document(world, "dev-docker", 1, module, image_digest))
        report = observer.report(
            "dev-docker",
            lambda r: r["lastAppliedSequence"] == 1 and (r["modules"].get("mnist") or {}).get("status") == "running",
            timeout=600,
        )
        assert report["status"]["code"] == 200, report
        port = report["modules"]["mnist"]["port"]
        assert infer(port) == 200
        running = [c for c in _containers() if c.status == "running"]
        assert len(running) == 1, [c.name for c in _containers()]
        assert running[0].labels[LABEL_MODULE] == "mnist:1"

        observer.desired("dev-docker", _document(world, "dev-docker", 2, None, image_digest))
        gone = observer.report("dev-docker", lambda r: r["lastAppliedSequence"] == 2, timeout=120)
        assert gone["status"]["code"] == 200 and not gone["modules"], gone
        assert _containers() == []
    finally:
        agent.stop()
        observer.close()
        for container in _containers():
            container.remove(force=True)
