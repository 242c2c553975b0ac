"""A SIGKILL at the Docker runtime's own steps (issue 13): a real engine, Mosquitto and ``edgeship agent run``.

The steps that differ from the process runtime (``test_agent_kill_points.py`` covers every
step there): the image load of a first install (``environment``), and in an update the
container's creation (``install``), its start, the switch and the stop of the old container.
The agent kills itself there (``EDGESHIP_AGENT_FAULT``), is started again, and must report
200 for the new version, serve it, and leave exactly one container of the module (the active
slot's) and nothing else of its own. Few cases, one device and one image: containers are slow
to create and remove on the vfs storage driver. Every version of the module is the same bundle
and image under another signed version number, so an update loads nothing.

The module is called ``kdigits`` so that its containers (``edgeship-kdigits.a``/``.b``) are
not mistaken for another test's.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer, SignedModule, infer
from kill_checks import leftovers, serving_slot, settled
from module_world import BASE_IMAGE, MNIST, QUIET, session_wheelhouse
from mosquitto import Mosquitto
from parts import need

from edgeship.agent.runtimes.docker import LABEL_SERVICE
from edgeship.deployment import ModuleBlobs, ModuleEntry, build_document, sign_document
from edgeship.modules.manifest import ArtifactRef, BundleRef, EnvironmentRef, ImageRef, ModelPin, ModuleManifest
from edgeship.packager.bundle import build_bundle
from edgeship.registry import Model
from edgeship.signing import MODULE_PAYLOAD_TYPE, sign_envelope

pytestmark = [pytest.mark.timeout(1800), pytest.mark.docker, pytest.mark.mosquitto, pytest.mark.slow]

NAME = "kdigits"
IMAGE_TAG = "edgeship-test/agent-kill:1"
UPDATE_STEPS = ["install", "start", "switch", "stop"]


def _docker() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except Exception:
        return None


@dataclass
class _Release:
    """The module's bundle and image, signed again under each new version number."""

    world: AgentWorld
    manifest: ModuleManifest
    image_digest: str
    version: int = 0

    def next(self) -> SignedModule:
        self.version += 1
        manifest = self.manifest.model_copy(update={"version": self.version})
        envelope = sign_envelope(manifest.to_bytes(), MODULE_PAYLOAD_TYPE, [self.world.release])
        return SignedModule(NAME, self.version, json.loads(envelope.to_json()), manifest, manifest.bundle.digest)

    def document(self, device_id: str, sequence: int, module: SignedModule) -> bytes:
        entry = ModuleEntry(
            module=module.envelope,
            blobs=ModuleBlobs(bundle=f"/blobs/{module.bundle_digest}", image=f"/blobs/{self.image_digest}"),
        )
        doc = build_document(device_id=device_id, sequence=sequence, modules={NAME: entry},
                             issued_at=datetime.now(timezone.utc), ttl=timedelta(days=1))
        return sign_document(doc, [self.world.hub_key]).to_json().encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentWorld]:
    root = tmp_path_factory.mktemp("agent-kill-docker")
    blobs = BlobServer(root / "served")
    yield AgentWorld(root, session_wheelhouse(tmp_path_factory), blobs)
    blobs.close()


@pytest.fixture(scope="module")
def release(world: AgentWorld) -> Iterator[_Release]:
    client = _docker()
    need(client is not None, "a Docker engine")
    from edgeship.packager.image import build_image

    model = Model.register(world.workspace, MNIST, "mnist")
    out = world.root / "built"
    out.mkdir()
    bundle = build_bundle(out / "bundle.tar", models=[model], wheelhouse=world.wheelhouse)
    built = build_image(bundle.path, tag=IMAGE_TAG, base_image=BASE_IMAGE, archive_path=out / "image.tar",
                        console=QUIET)
    assert built.archive_digest is not None
    archive = ArtifactRef(path="image.tar", digest=built.archive_digest, size=built.size)
    manifest = ModuleManifest(
        name=NAME,
        version=1,
        models=[ModelPin(name=model.name, version=model.version, digest=model.digest, framework="onnx")],
        environment=EnvironmentRef(lockDigest=bundle.env_lock_digest, python="3.11"),
        bundle=BundleRef(digest=bundle.digest, size=bundle.size),
        image=ImageRef(id=built.id, tag=IMAGE_TAG, baseImage=BASE_IMAGE, archive=archive),
        files=[ArtifactRef(path="bundle.tar", digest=bundle.digest, size=bundle.size), archive],
    )
    world.blobs.put(bundle.path.read_bytes())
    world.blobs.put((out / "image.tar").read_bytes())
    client.images.remove(built.id, force=True)  # the first install must load it from the archive
    yield _Release(world, manifest, built.archive_digest)
    for container in _containers():
        with contextlib.suppress(Exception):
            container.remove(force=True)
    with contextlib.suppress(Exception):
        client.images.remove(built.id, force=True)


def _containers() -> list[Any]:
    client = _docker()
    found = client.containers.list(all=True, filters={"label": LABEL_SERVICE})
    return [c for c in found if c.labels.get(LABEL_SERVICE, "").startswith(NAME + ".")]


@pytest.fixture(scope="module")
def broker(world: AgentWorld) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(world.root / "mosquitto").start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="module")
def observer(broker: Mosquitto) -> Iterator[Observer]:
    obs = Observer(broker.port, client_id="kill-points-docker-observer")
    yield obs
    obs.close()


@dataclass
class _Device:
    agent: AgentProcess
    sequence: int = 0  # of the last document published to it


@pytest.fixture(scope="module")
def device(world: AgentWorld, broker: Mosquitto, release: _Release) -> Iterator[_Device]:
    agent = AgentProcess(world, "dev-kill-docker", broker.url, world.root / "device")
    agent.config.write_text(agent.config.read_text().replace('runtime = "process"', 'runtime = "docker"'))
    yield _Device(agent)
    agent.stop()


def _applied(version: int, sequence: int) -> Callable[[dict[str, Any]], bool]:
    def check(report: dict[str, Any]) -> bool:
        module = report["modules"].get(NAME) or {}
        return (report["lastAppliedSequence"] == sequence and report["status"]["code"] == 200
                and module.get("version") == version and module.get("status") == "running")

    return check


def _answers(port: int) -> bool:
    try:
        return infer(port, timeout=10) == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _kill_and_come_back(device: _Device, observer: Observer, release: _Release, step: str) -> tuple[str, int] | None:
    """Publish the next version with ``step`` armed; return the slot serving while the agent is dead."""
    agent = device.agent
    agent.stop()  # still running if the case before failed
    module = release.next()
    device.sequence += 1
    agent.start(fault=f"{step}:{NAME}")
    observer.desired(agent.device_id, release.document(agent.device_id, device.sequence, module))
    agent.wait_killed(timeout=900)
    assert f"fault injected: {step} of {NAME}" in agent.log()
    slot = serving_slot(agent, NAME)
    assert slot is None or _answers(slot[1]), f"the recorded active slot {slot} does not serve"

    mark = len(observer.messages)
    agent.start()
    report = observer.report(agent.device_id, _applied(module.version, device.sequence), after=mark, timeout=900)
    assert _answers(report["modules"][NAME]["port"]), agent.log()[-3000:]
    state = settled(agent, timeout=600)
    assert state["active"] == {NAME: report["modules"][NAME]["service"]}
    assert leftovers(agent, runtime="docker") == [], agent.log()[-3000:]
    containers = _containers()
    assert [(c.labels[LABEL_SERVICE], c.status) for c in containers] == [(state["active"][NAME], "running")]
    assert agent.stop() == 0
    return slot


def test_a_kill_after_the_image_load_of_a_first_install_converges_to_the_new_version(
    device: _Device, observer: Observer, release: _Release
) -> None:
    assert _kill_and_come_back(device, observer, release, "environment") is None


@pytest.mark.parametrize("step", UPDATE_STEPS)
def test_a_kill_at_a_docker_step_of_an_update_leaves_the_old_or_the_new_container_serving(
    step: str, device: _Device, observer: Observer, release: _Release
) -> None:
    if device.sequence == 0:  # this case alone: install the first version without a fault
        module = release.next()
        device.sequence = 1
        device.agent.start()
        observer.desired(device.agent.device_id, release.document(device.agent.device_id, 1, module))
        observer.report(device.agent.device_id, _applied(module.version, 1), timeout=900)
        settled(device.agent, timeout=600)
    old = serving_slot(device.agent, NAME)
    assert old is not None
    slot = _kill_and_come_back(device, observer, release, step)
    assert slot is not None
    assert (slot != old) == (step in ("switch", "stop"))  # the old container until the switch, the new one after
