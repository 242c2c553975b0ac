"""One contract for every module runtime: the same real module, the same steps, the same answers.

Each test runs against the process runtime and, with a Docker engine, the Docker
runtime; a runtime passes only if it behaves as ``ModuleRuntime`` says. The module
is the no-code MNIST ONNX model, packaged and signed once per test module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from module_world import BASE_IMAGE, MNIST, V2_REQUEST, build_module, session_wheelhouse
from parts import free_port, need

from edgeship.agent.fetch.download import BlobCache
from edgeship.agent.runtimes import ModuleRuntime, ModuleSpec, ProcessRuntime, UnknownServiceError, unpack_bundle
from edgeship.errors import RuntimeFailure
from edgeship.modules.store import StoredModule
from edgeship.modules.verify import ArtifactDigestError, local_trust_root, verify_module_dir
from edgeship.registry import Model
from edgeship.workspace import Workspace

HEALTHY_TIMEOUT = 90.0  # seconds; a container on a vfs-backed engine starts slowly
pytestmark = pytest.mark.timeout(900)  # the first Docker test also builds the image (minutes on vfs)


@dataclass
class World:
    workspace: Workspace
    wheelhouse: Path
    root: Path
    model: Model
    module: StoredModule


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("runtime-world")
    ws = Workspace.at(root / "ws")
    ws.create()
    wheelhouse = session_wheelhouse(tmp_path_factory)
    model = Model.register(ws, MNIST, "mnist")
    module = build_module(ws, wheelhouse, [model], root / "out-1")
    return World(ws, wheelhouse, root, model, module)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def docker_module(world: World) -> Iterator[StoredModule]:
    """The same model packaged with an image (built once; slow on a vfs engine), removed afterwards."""
    need(_docker_available(), "a Docker engine")
    module = build_module(
        world.workspace, world.wheelhouse, [world.model], world.root / "out-image", image_base=BASE_IMAGE
    )
    yield module
    import docker

    image = module.manifest().image
    if image is not None:  # a full copy per image on vfs: do not leave one per test run
        with contextlib.suppress(docker.errors.APIError):
            docker.from_env().images.remove(image.id, force=True)


@dataclass
class Subject:
    runtime: ModuleRuntime
    module: StoredModule
    workspace: Workspace

    def spec(self, name: str, **extra: Any) -> ModuleSpec:
        """A spec as deploy makes one: only from a directory that verified."""
        verified = verify_module_dir(self.module.directory, local_trust_root(self.workspace))
        return ModuleSpec(name, verified.directory, verified.manifest, free_port(), **extra)


@pytest.fixture(params=["process", "docker"])
def subject(request: pytest.FixtureRequest, world: World, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "process":
        runtime: ModuleRuntime = ProcessRuntime(world.root / "process-state")  # venv built once
        subject = Subject(runtime, world.module, world.workspace)
    else:
        module = request.getfixturevalue("docker_module")
        from edgeship.agent.runtimes.docker import DockerRuntime

        runtime = DockerRuntime()
        subject = Subject(runtime, module, world.workspace)
    yield subject
    for status in runtime.list():
        if status.name.startswith("contract-"):
            runtime.remove(status.name)


def _infer(port: int, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/mnist/infer", data=V2_REQUEST.read_bytes(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _predicted_class(document: dict[str, Any]) -> int:
    scores = document["outputs"][0]["data"]
    return max(range(len(scores)), key=scores.__getitem__)


def test_module_runs_scores_stops_restarts_and_goes_away(subject: Subject) -> None:
    runtime, spec = subject.runtime, subject.spec("contract-life")
    installed = runtime.install(spec)
    assert (installed.state, installed.module, installed.port) == ("stopped", spec.manifest.ref, spec.port)

    runtime.start(spec.name)
    healthy = runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT)
    assert healthy.state == "running" and (healthy.pid or healthy.container_id)
    code, document = _infer(spec.port)
    assert code == 200 and _predicted_class(document) == 2
    assert [s.name for s in runtime.list() if s.name == spec.name] == [spec.name]

    stopped = runtime.stop(spec.name)
    assert stopped.state == "stopped" and stopped.pid is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{spec.port}/", timeout=2)

    runtime.start(spec.name)
    assert runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT).state == "running"
    assert "Serving mnist on" in runtime.logs(spec.name, tail=50)
    assert len(runtime.logs(spec.name, tail=1).strip().splitlines()) <= 1

    runtime.remove(spec.name)
    with pytest.raises(UnknownServiceError):
        runtime.status(spec.name)
    assert spec.name not in [s.name for s in runtime.list()]


def test_auth_keys_reach_the_server_and_are_required(subject: Subject) -> None:
    runtime, spec = subject.runtime, subject.spec("contract-auth", auth_keys=("primary-k", "secondary-k"))
    runtime.install(spec)
    runtime.start(spec.name)
    runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT)
    assert _infer(spec.port)[0] == 401
    assert _infer(spec.port, "wrong")[0] == 401
    assert _infer(spec.port, "secondary-k")[0] == 200
    assert _infer(spec.port, "primary-k")[0] == 200


def test_a_killed_server_is_restarted_and_counted(subject: Subject) -> None:
    runtime, spec = subject.runtime, subject.spec("contract-crash", restart="on-failure")
    runtime.install(spec)
    runtime.start(spec.name)
    first = runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT)
    assert first.pid is not None and first.restart_count == 0
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while runtime.status(spec.name).restart_count < 1:
        assert time.monotonic() < deadline, runtime.logs(spec.name)
        time.sleep(0.1)
    again = runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT)
    assert again.restart_count >= 1 and again.pid != first.pid
    assert _predicted_class(_infer(spec.port)[1]) == 2


def test_a_server_that_dies_under_never_is_reported_failed_with_its_exit_code(subject: Subject) -> None:
    runtime, spec = subject.runtime, subject.spec("contract-never", restart="never")
    runtime.install(spec)
    runtime.start(spec.name)
    first = runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    # "backoff" is the short window between the server's death and the supervisor recording it.
    while (status := runtime.status(spec.name)).state in ("running", "backoff"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (status.state, status.exit_code, status.restart_count) == ("failed", 137, 0)
    with pytest.raises(RuntimeFailure, match="not healthy: it is failed"):
        runtime.wait_healthy(spec.name, 5)


def test_unknown_service_is_a_clear_error(subject: Subject) -> None:
    for call in (subject.runtime.start, subject.runtime.status, subject.runtime.logs, subject.runtime.remove):
        with pytest.raises(UnknownServiceError, match="No service contract-nobody"):
            call("contract-nobody")


# -- process runtime only --------------------------------------------------------------


def test_a_tampered_artifact_is_refused_although_the_cache_hashed_it_before(world: World, tmp_path: Path) -> None:
    module_dir = tmp_path / "module"
    shutil.copytree(world.module.directory, module_dir)
    trust = local_trust_root(world.workspace)
    cache = BlobCache(tmp_path / "cache", "http://127.0.0.1:9")
    verify_module_dir(module_dir, trust, digest_of=cache.digest_of)  # hashes the bundle and remembers it
    bundle = module_dir / world.module.manifest().bundle.path
    assert cache.checked_digest(bundle) is not None
    with bundle.open("r+b") as handle:  # same size, one byte changed, written after the first check
        handle.seek(700)
        byte = handle.read(1)
        handle.seek(700)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactDigestError, match="altered or corrupted"):
        verify_module_dir(module_dir, trust, digest_of=cache.digest_of)


def test_a_model_only_install_leaves_the_wheelhouse_packed_and_serves(world: World) -> None:
    runtime = ProcessRuntime(world.root / "process-state")  # the venv the contract tests built (or built now)
    spec = Subject(runtime, world.module, world.workspace).spec("contract-reuse")
    runtime.install(spec)
    app = runtime.app_dir(spec.manifest.name, spec.manifest.version)
    shutil.rmtree(app)  # as a new version with the same environment lock finds it: venv ready, no app
    runtime.install(spec)
    assert not (app / "wheelhouse").exists()
    assert (app / "requirements.lock").is_file() and (app / "azureml-models").is_dir()
    try:
        runtime.start("contract-reuse")
        assert runtime.wait_healthy("contract-reuse", HEALTHY_TIMEOUT).state == "running"
    finally:
        runtime.remove("contract-reuse")


def test_an_app_unpacked_without_its_wheelhouse_is_unpacked_again_to_build_a_venv(
    world: World, tmp_path: Path
) -> None:
    donor = ProcessRuntime(world.root / "process-state")
    spec = Subject(donor, world.module, world.workspace).spec("contract-rebuild")
    donor.install(spec)  # venv ready there: the app is unpacked without wheelhouse/
    shutil.rmtree(donor.app_dir(spec.manifest.name, spec.manifest.version))
    donor.install(spec)
    donor.remove("contract-rebuild")
    fresh = ProcessRuntime(tmp_path / "state")  # no venv here, but the same app without its wheels
    app = fresh.app_dir(spec.manifest.name, spec.manifest.version)
    shutil.copytree(donor.app_dir(spec.manifest.name, spec.manifest.version), app)
    assert not (app / "wheelhouse").exists()
    fresh.install(spec)  # would fail in pip without the wheels
    assert (app / "wheelhouse").is_dir()
    assert (fresh.venv_dir(spec.manifest.environment.lock_digest) / "bin" / "python").exists()


def _evil_tar(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("requirements.lock")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"x\n"))
        info = tarfile.TarInfo({"absolute": "/tmp/edgeship-slip", "dotdot": "src/../../slip.txt"}.get(kind, "src/link"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "../../outside"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"slip") if info.isfile() else None)
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink"])
def test_tar_slip_bundle_is_refused_before_anything_is_written(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "app"
    dest.mkdir()
    with pytest.raises(RuntimeFailure, match="refusing to unpack"):
        unpack_bundle(_evil_tar(tmp_path / "evil.tar", kind), dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "slip.txt").exists()


def test_install_of_a_tar_slip_bundle_leaves_no_app_folder(world: World, tmp_path: Path) -> None:
    module_dir = tmp_path / "module"
    shutil.copytree(world.module.directory, module_dir)
    _evil_tar(module_dir / "bundle.tar", "dotdot")
    runtime = ProcessRuntime(tmp_path / "state")
    spec = ModuleSpec("slip", module_dir, world.module.manifest(), free_port())
    with pytest.raises(RuntimeFailure, match="outside its folder"):
        runtime.install(spec)
    assert not runtime.app_dir("mnist", spec.manifest.version).exists()
    assert not list((tmp_path / "state").rglob("slip.txt"))


def test_model_only_update_reuses_the_venv(world: World, tmp_path: Path) -> None:
    v2_model = Model.register(world.workspace, MNIST, "mnist")  # a new model version: same bytes, new path
    v2 = build_module(world.workspace, world.wheelhouse, [v2_model], tmp_path / "out-2")
    first, second = world.module.manifest(), v2.manifest()
    assert first.version != second.version and first.bundle.digest != second.bundle.digest
    assert first.environment.lock_digest == second.environment.lock_digest

    runtime = ProcessRuntime(tmp_path / "state")
    runtime.install(ModuleSpec("reuse-a", world.module.directory, first, free_port()))
    venv = runtime.venv_dir(first.environment.lock_digest)
    inode, sentinel = venv.stat().st_ino, venv / "sentinel"
    sentinel.write_text("still the same venv")
    began = time.monotonic()
    spec = ModuleSpec("reuse-b", v2.directory, second, free_port())
    runtime.install(spec)
    assert time.monotonic() - began < 3.0  # unpacking only; a venv build takes several seconds
    assert venv.stat().st_ino == inode and sentinel.exists()
    assert sorted(p.name for p in venv.parent.iterdir()) == [venv.name]  # no second venv, no scratch left
    runtime.start(spec.name)
    try:
        status = runtime.wait_healthy(spec.name, HEALTHY_TIMEOUT)
        assert status.module == f"mnist:{second.version}"
        assert _infer(spec.port)[1]["model_version"] == str(v2_model.version)
    finally:
        runtime.remove(spec.name)
        runtime.remove("reuse-a")


def test_state_files_keep_keys_private_and_off_the_command_line(world: World, tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "state")
    manifest = world.module.manifest()
    runtime.install(ModuleSpec("private", world.module.directory, manifest, free_port(), auth_keys=("k-1",)))
    service = runtime.service_dir("private") / "service.json"
    assert service.stat().st_mode & 0o077 == 0
    record = json.loads(service.read_text())
    assert "k-1" not in " ".join(record["command"]) and record["env"]["EDGESHIP_PRIMARY_KEY"] == "k-1"
    assert record["command"][1:4] == ["-m", "edgeship", "serve"]
