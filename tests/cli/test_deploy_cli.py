"""``edgeship deploy`` and ``edgeship service list/logs/delete``, end to end with the process runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from module_world import MNIST, V2_REQUEST, build_module, session_wheelhouse
from parts import free_port

from edgeship.modules.store import StoredModule
from edgeship.registry import Model
from edgeship.workspace import Workspace


@dataclass
class World:
    workspace: Workspace
    module: StoredModule
    root: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("deploy-cli")
    ws = Workspace.at(root / "ws")
    ws.create()
    model = Model.register(ws, MNIST, "mnist")
    module = build_module(ws, session_wheelhouse(tmp_path_factory), [model], root / "out", auth=True)
    yield World(ws, module, root)
    for record in (ws.root / "services").glob("*.json"):  # never leave a server running
        _cli(ws, "service", "delete", record.stem)


def _cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeship", *args, "--workspace", str(ws.root)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _infer(url: str, key: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url, data=V2_REQUEST.read_bytes(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            scores = json.loads(reply.read())["outputs"][0]["data"]
            assert max(range(10), key=scores.__getitem__) == 2
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_deploy_prints_uris_and_keys_then_list_logs_delete(world: World) -> None:
    port = free_port()
    args = ["deploy", "-n", "digits", "--module", "mnist:1", "--runtime", "process", "--port", str(port)]
    done = _cli(world.workspace, *args)
    assert done.returncode == 0, done.stderr
    assert f"Scoring URI: http://127.0.0.1:{port}/score" in done.stdout
    v2 = f"http://127.0.0.1:{port}/v2/models/mnist/infer"
    assert f"v2 URI:      {v2}" in done.stdout
    key = done.stdout.split("Primary key:", 1)[1].split()[0]
    assert _infer(v2, None) == 401 and _infer(v2, key) == 200

    listed = _cli(world.workspace, "service", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["module"], row["runtime"], row["state"], row["port"]) == (
        "digits", "mnist:1", "process", "running", port
    )
    assert key not in listed.stdout
    table = _cli(world.workspace, "service", "list")
    assert "digits" in table.stdout and "running" in table.stdout

    logs = _cli(world.workspace, "service", "logs", "digits", "--tail", "20")
    assert logs.returncode == 0 and f"Serving mnist on http://127.0.0.1:{port}" in logs.stdout

    record = world.workspace.root / "services" / "digits.json"
    assert record.stat().st_mode & 0o077 == 0

    deleted = _cli(world.workspace, "service", "delete", "digits")
    assert deleted.returncode == 0, deleted.stderr
    assert not record.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    assert json.loads(_cli(world.workspace, "service", "list", "--json").stdout) == []
    gone = _cli(world.workspace, "service", "logs", "digits")
    assert gone.returncode == 1 and "No service digits" in gone.stderr


def test_deploy_refuses_a_tampered_module(world: World, tmp_path: Path) -> None:
    bundle = world.module.directory / "bundle.tar"
    original = bundle.read_bytes()
    bundle.unlink()  # the store hard-links its files: write a new file, never through the link
    bundle.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        done = _cli(world.workspace, "deploy", "-n", "tampered", "--module", "mnist", "--runtime", "process")
    finally:
        bundle.unlink()
        bundle.write_bytes(original)
    assert done.returncode == 1
    assert "Refusing to deploy mnist:1" in done.stderr
    assert "bundle.tar does not match the signed manifest" in done.stderr
    assert not (world.workspace.root / "services" / "tampered.json").exists()
    assert not (world.workspace.root / "services" / "process" / "run" / "tampered").exists()


def test_deploy_of_an_unknown_module_or_bad_runtime_is_one_clear_error(world: World) -> None:
    missing = _cli(world.workspace, "deploy", "-n", "x", "--module", "nosuch:3")
    assert missing.returncode == 1 and "No module nosuch:3" in missing.stderr
    bad = _cli(world.workspace, "deploy", "-n", "x", "--module", "mnist", "--runtime", "vm")
    assert bad.returncode == 1 and "--runtime 'vm' is unknown" in bad.stderr


def test_deploy_a_registered_model_packages_and_signs_it_first(world: World) -> None:
    """``--model NAME:VERSION``, as ``az ml model deploy -m``: the release's package step, then the same run."""
    from edgeship.demo.release import wheel_cache_dir

    wheels = world.workspace.cache_dir / "wheels"
    if not wheels.exists():
        wheels.parent.mkdir(parents=True, exist_ok=True)
        wheels.symlink_to(wheel_cache_dir(), target_is_directory=True)  # warm, as the demo's
    Model.register(world.workspace, MNIST, "mnist-b")  # its own module name: 'mnist' stays at version 1
    port = free_port()
    done = _cli(world.workspace, "deploy", "-n", "packaged", "--model", "mnist-b:1", "--runtime", "process",
                "--port", str(port))
    try:
        assert done.returncode == 0, done.stderr
        assert "Packaged and signed module mnist-b:1." in done.stderr
        assert "runs mnist-b:1 (process runtime) and is healthy" in done.stdout
        assert _infer(f"http://127.0.0.1:{port}/v2/models/mnist-b/infer", None) == 200
    finally:
        _cli(world.workspace, "service", "delete", "packaged")
    both = _cli(world.workspace, "deploy", "-n", "x", "--module", "mnist", "--model", "mnist:1")
    assert both.returncode == 1 and "Give --module NAME[:VERSION] to run a stored module, or --model" in both.stderr
    stray = _cli(world.workspace, "deploy", "-n", "x", "--module", "mnist", "--ic", "inferenceconfig.json")
    assert stray.returncode == 1 and "--ic and --dc go with --model" in stray.stderr
