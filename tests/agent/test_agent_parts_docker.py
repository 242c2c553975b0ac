"""Docker runtime from parts (ADR 0028): layers the engine has are not fetched, and the image still loads.

Real Docker engine, real blob host, real agent code (accept, plan, executor,
``DockerRuntime``). The images are small so the test is quick on vfs: a base made with
``docker import`` (no registry), a "library" layer, and the model in the last layer.
Containers are created, not started (the runtime contract tests run full images).
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from parts import need, port_block
from parts_world import CHUNK, PartsWorld, changed, model_bytes

from edgeship.agent.decide.plan import CurrentState, plan
from edgeship.agent.reconcile import desired_from
from edgeship.agent.runtimes.docker import DockerRuntime
from edgeship.modules.manifest import MANIFEST_FILE
from edgeship.modules.plain import parse_manifest

pytestmark = [pytest.mark.timeout(900), pytest.mark.docker]
TAG = "edgeship-test/parts"
BASE = "edgeship-test/parts-base:1"


def _docker() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture
def client() -> Iterator[Any]:
    """The engine, with a tiny base image imported from a tar (removed after)."""
    found = _docker()
    need(found is not None, "a Docker engine")
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        data = b"the base image of the parts test\n"
        info = tarfile.TarInfo("etc/base.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    found.api.import_image_from_data(rootfs.getvalue(), repository=BASE.split(":")[0], tag=BASE.split(":")[1])
    yield found
    with contextlib.suppress(Exception):
        found.images.remove(BASE, force=True)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[PartsWorld]:
    built = PartsWorld(tmp_path)
    yield built
    built.server.close()


def model_image(client: Any, model: bytes, tag: str, archive: Path) -> str:
    """The base, a library layer and a layer holding ``model``, saved to ``archive``; its id."""
    context = io.BytesIO()
    lines = [f"FROM {BASE}", "COPY lib.txt /lib/lib.txt", "COPY model.onnx /models/model.onnx", 'CMD ["/serve"]']
    dockerfile = ("\n".join(lines) + "\n").encode()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("lib.txt", b"library\n" * 1000), ("model.onnx", model)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _log = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    with archive.open("wb") as out:
        for chunk in image.save(named=True):
            out.write(chunk)
    return str(image.id)


def test_a_device_fetches_only_the_layers_its_engine_lacks_and_loads_the_image(
    client: Any, world: PartsWorld, tmp_path: Path
) -> None:
    first = model_bytes(21, 3 * CHUNK)
    ids = []
    modules = []
    for version, model in ((1, first), (2, changed(first, CHUNK))):
        archive = tmp_path / f"image-{version}.tar"
        ids.append(model_image(client, model, f"{TAG}:{version}", archive))
        modules.append(world.module("digits", model, image=(archive, ids[-1], f"{TAG}:{version}")))
    for image_id in ids:  # built one after the other, so they share the library layer; the device has neither
        client.images.remove(image_id, force=True)
    runtime = DockerRuntime(client)
    low = port_block(2)
    executor = world.executor(tmp_path / "device", runtime=runtime, ports=(low, low + 1))
    base_layers = client.images.get(BASE).attrs["RootFS"]["Layers"]
    try:
        for number, module in enumerate(modules):
            manifest = parse_manifest((module / MANIFEST_FILE).read_bytes())
            assert manifest.parts is not None and manifest.parts.image is not None
            layers = manifest.parts.image.layers
            assert [layer.digest for layer in layers[: len(base_layers)]] == base_layers
            mark = world.mark()
            accepted = world.accept({"digits": module}, number + 1)
            executor.document = accepted
            for command in plan(desired_from(accepted), CurrentState(datetime.now(timezone.utc))):
                if command.kind in ("check_space", "download", "verify", "install"):
                    executor.execute(command)
            sent, asked = world.served_since(mark)
            config = manifest.parts.image.config
            assert config.digest in asked and layers[-1].digest in asked, "the config and the model layer travel"
            assert not {layer.digest for layer in layers[: len(base_layers)]} & set(asked), "the base stays home"
            if number == 1:  # the update: the engine has every layer below the model's
                assert set(asked) == {config.digest, layers[-1].digest}
                assert sent == config.size + layers[-1].size
                assert sent <= 1.1 * 3 * CHUNK + 64 * 1024, "a model layer's update costs about the model"
            assert client.images.get(ids[number]).id == ids[number], "the image loaded from the parts"
            for command in plan(desired_from(accepted), CurrentState(datetime.now(timezone.utc))):
                if command.kind == "install":
                    runtime.remove(command.service)  # the next version installs in the same slot (no switch here)
                    executor.forget(command.service)
    finally:
        for image_id in ids:
            with contextlib.suppress(Exception):  # already gone
                client.images.remove(image_id, force=True)
