"""Container images from bundles: labels, non-root user, health check, models in the last layer, save/load.

Image builds take tens of seconds each on the vfs storage driver, so one module-scoped
fixture builds the two images every test here inspects: a first version, and a second
that differs only in one model.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bundle_world import QUIET, make_world, session_wheelhouse
from parts import need

from edgeship.errors import PackagingError
from edgeship.packager.bundle import BundleInfo, build_bundle
from edgeship.packager.image import ImageInfo, build_image, docker_client, render_dockerfile
from edgeship.registry import Model
from edgeship.registry.blobs import sha256_file

BASE_IMAGE = "edgeship-base:bookworm-py3"
USER = "10001:10001"


@dataclass
class Built:
    client: Any
    bundle: BundleInfo
    v1: ImageInfo
    v2: ImageInfo


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    try:
        client = docker_client()
    except PackagingError:
        client = None
    need(client is not None, "a Docker engine")
    import docker.errors

    try:
        client.images.get(BASE_IMAGE)
        has_base = True
    except docker.errors.ImageNotFound:
        has_base = False
    need(has_base, f"the base image {BASE_IMAGE} (build it with: bash .ci/base-image.sh)")
    try:  # a rootfs imported from a `mktemp -d` folder has / at 0700: no non-root user can run
        client.containers.run(BASE_IMAGE, ["true"], user=USER, network_mode="none", remove=True)
    except docker.errors.APIError as exc:
        pytest.fail(
            f"{BASE_IMAGE} cannot run as a non-root user ({exc.explanation}); rebuild it "
            "with the rootfs folder at mode 0755 (chmod 755 before `tar | docker import`)."
        )

    wheelhouse = session_wheelhouse(tmp_path_factory)
    root = tmp_path_factory.mktemp("image-world")
    world = make_world(root)
    repo = f"edgeship-test-{uuid.uuid4().hex[:8]}"
    bundle = build_bundle(
        root / "v1" / "bundle.tar",
        models=world.models,
        wheelhouse=wheelhouse,
        source_dir=world.source,
        entry_script=Path("score.py"),
    )
    v1 = build_image(
        bundle.path,
        tag=f"{repo}:1",
        base_image=BASE_IMAGE,
        archive_path=root / "v1" / "image.tar",
        labels={"org.opencontainers.image.version": "1"},
        console=QUIET,
        client=client,
    )
    (root / "w2").mkdir()
    (root / "w2" / "weights.bin").write_bytes(b"\x02" * 300_000)
    weights2 = Model.register(world.workspace, root / "w2" / "weights.bin", "weights")
    bundle2 = build_bundle(
        root / "v2" / "bundle.tar",
        models=[weights2, world.models[1]],
        wheelhouse=wheelhouse,
        source_dir=world.source,
        entry_script=Path("score.py"),
    )
    v2 = build_image(bundle2.path, tag=f"{repo}:2", base_image=BASE_IMAGE, console=QUIET, client=client)
    yield Built(client, bundle, v1, v2)
    for image in (v2, v1):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_image_has_labels_non_root_user_healthcheck_and_serve_command(built: Built) -> None:
    config = built.client.images.get(built.v1.id).attrs["Config"]
    labels = config["Labels"]
    assert labels["io.edgeship.module.digest"] == built.bundle.digest == labels["io.edgeship.bundle.digest"]
    assert labels["io.edgeship.env-lock.digest"] == built.bundle.env_lock_digest
    assert labels["org.opencontainers.image.base.name"] == BASE_IMAGE
    assert labels["org.opencontainers.image.version"] == "1"
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD" and "urlopen" in " ".join(config["Healthcheck"]["Test"])
    assert "5001/tcp" in config["ExposedPorts"]
    assert "AZUREML_MODEL_DIR=/var/azureml-app/azureml-models" in config["Env"]  # two models: the root
    cmd = config["Cmd"]
    assert cmd[:2] == ["/opt/edgeship/venv/bin/edgeship", "serve"]
    assert cmd[cmd.index("--entry-script") + 1] == "/var/azureml-app/src/score.py"
    assert cmd[cmd.index("--model-dir") + 1] == "/var/azureml-app"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_runtime_runs_offline_as_non_root(built: Built) -> None:
    probe = (
        "import os, importlib.util, onnxruntime;"
        "m = 'edgeship.scoring' if importlib.util.find_spec('edgeship.scoring') else 'edgeship';"
        "__import__(m);"
        "open(os.path.join(os.environ['AZUREML_MODEL_DIR'], 'weights/1/weights.bin'), 'rb').read(1);"
        "print(os.getuid())"
    )
    out = built.client.containers.run(
        built.v1.id,
        entrypoint=["/opt/edgeship/venv/bin/python", "-c", probe],
        network_mode="none",
        remove=True,
    )
    assert out.decode().strip() == "10001"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_models_are_the_last_filesystem_layer(built: Built) -> None:
    history = built.client.api.history(built.v1.id)  # newest first
    with_bytes = [h for h in history if h["Size"] > 0]
    assert "/var/azureml-app/azureml-models" in with_bytes[0]["CreatedBy"]
    assert "COPY" in with_bytes[0]["CreatedBy"]
    newer = history[: history.index(with_bytes[0])]
    assert newer and all("#(nop)" in h["CreatedBy"] and "COPY" not in h["CreatedBy"] for h in newer)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_model_only_change_rebuilds_only_the_last_layer(built: Built) -> None:
    assert built.v1.layers[:-1] == built.v2.layers[:-1]
    assert built.v1.layers[-1] != built.v2.layers[-1]
    last = next(h for h in built.client.api.history(built.v2.id) if h["Size"] > 0)
    model_bytes = 300_000 + len("zero\none\n") + len('{"k": 1}\n')
    assert model_bytes <= last["Size"] <= 1.1 * model_bytes + 64 * 1024  # plus tar/dir overhead


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_saved_archive_loads_back(built: Built) -> None:
    archive = built.v1.archive_path
    assert archive is not None and archive.stat().st_size == built.v1.size
    assert built.v1.archive_digest == "sha256:" + sha256_file(archive)
    built.client.images.remove(built.v1.tag)  # the tag only: layers stay shared with v2
    with archive.open("rb") as handle:
        loaded = built.client.images.load(handle)
    assert [i.id for i in loaded] == [built.v1.id]
    assert built.v1.tag in built.client.images.get(built.v1.id).tags


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(PackagingError, match="no Docker engine reachable; start it or pass --no-image"):
        docker_client()


def test_dockerfile_puts_models_last_and_runs_as_a_numeric_user() -> None:
    text = render_dockerfile(
        base_image="python:3.11-slim",
        entry_script=None,
        model_paths=["azureml-models/digits/3"],
        labels={"a": "x$y"},
    )
    steps = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "\t"))]
    copies = [line for line in text.splitlines() if line.startswith("COPY")]
    assert copies[-1] == "COPY azureml-models /var/azureml-app/azureml-models"
    assert steps[steps.index("FROM", 1) :].count("RUN") == 1  # one layer before the venv: the user
    assert steps[-2:] == ["ENV", "LABEL"]  # what varies per model comes after the models
    assert 'AZUREML_MODEL_DIR="/var/azureml-app/azureml-models/digits/3"' in text
    assert "USER 10001:10001" in text and "--entry-script" not in text  # no-code module
    assert '"a"="x\\$y"' in text
