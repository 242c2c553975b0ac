"""End to end: package the digits example into a signed image, run it, score through the mapped port.

The container's answer must equal what the same model gives in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from parts import free_port, need

from edgeship.errors import PackagingError
from edgeship.modules.verify import local_trust_root, verify_module_dir
from edgeship.packager.package import KEYS_FILE, PackageRequest, package_module
from edgeship.registry import ModelRef

BASE_IMAGE = os.environ.get("EDGESHIP_TEST_BASE_IMAGE", "edgeship-base:bookworm-py3")


@pytest.fixture(scope="module")
def docker_client() -> Any:
    from edgeship.packager.image import docker_client as connect

    try:
        client = connect()
    except PackagingError:
        client = None
    need(client is not None, "a Docker engine")
    return client


@pytest.fixture(scope="module")
def image_module(digits_project: Any, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("image") / "digits-image"
    request = PackageRequest(models=[ModelRef("digits", 1)], output=out, inference_config=digits_project.ic,
                             deployment_config=digits_project.dc, target="local", image=True, base_image=BASE_IMAGE)
    return package_module(digits_project.workspace, request)


@pytest.fixture(scope="module")
def container(image_module: Any, docker_client: Any) -> Iterator[tuple[str, dict[str, str]]]:
    keys = json.loads((image_module.output / KEYS_FILE).read_text())
    port = free_port()
    ctr = docker_client.containers.run(
        image_module.manifest.image.tag,
        detach=True,
        ports={"5001/tcp": ("127.0.0.1", port)},
        environment={"EDGESHIP_PRIMARY_KEY": keys["primaryKey"], "EDGESHIP_SECONDARY_KEY": keys["secondaryKey"]},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            ctr.reload()
            if ctr.status == "exited" or time.monotonic() > deadline:
                pytest.fail(f"container did not become healthy: {ctr.logs(tail=20).decode(errors='replace')}")
            time.sleep(0.5)
        yield url, keys
    finally:
        ctr.remove(force=True)


def test_image_module_is_signed_over_its_archive(image_module: Any, digits_project: Any) -> None:
    manifest = verify_module_dir(image_module.output, local_trust_root(digits_project.workspace)).manifest
    assert manifest.image is not None and manifest.image.archive is not None
    assert manifest.image.base_image == BASE_IMAGE
    assert "image.tar" in {f.path for f in manifest.files}


def test_container_scores_like_the_model_in_process(container: tuple[str, dict[str, str]],
                                                    digits_project: Any) -> None:
    import onnxruntime

    url, keys = container
    body = json.loads((digits_project.project / "sample-request.json").read_text())
    denied = httpx.post(url + "/score", json=body, timeout=30)
    assert denied.status_code == 401
    reply = httpx.post(url + "/score", json=body, timeout=30,
                       headers={"Authorization": f"Bearer {keys['secondaryKey']}"})
    assert reply.status_code == 200, reply.text
    session = onnxruntime.InferenceSession(str(digits_project.model_file), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: np.asarray(body["data"], np.float32)})
    result = reply.json()
    assert result["predictions"] == labels.tolist()
    assert np.allclose(result["probabilities"], probabilities, atol=1e-6)


def test_container_runs_as_non_root_with_healthcheck(image_module: Any, docker_client: Any) -> None:
    image = docker_client.images.get(image_module.manifest.image.tag)
    config = image.attrs["Config"]
    assert config["User"] not in ("", "root", "0")
    assert config["Healthcheck"]["Test"]
    assert config["Labels"]["io.edgeship.bundle.digest"] == image_module.manifest.bundle.digest


def test_saved_archive_matches_the_signed_digest(image_module: Any) -> None:
    from edgeship.modules.verify import file_digest

    archive: Path = image_module.output / "image.tar"
    assert file_digest(archive)[0] == image_module.manifest.image.archive.digest
