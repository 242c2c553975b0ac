"""The bundle is byte-reproducible, normalized, delta-friendly and installs with no network."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from bundle_world import QUIET, World, make_world, session_wheel_cache, session_wheelhouse

from edgeship.errors import BlobCorruptedError, PackagingError
from edgeship.packager.bundle import BundleInfo, build_bundle, render_lock
from edgeship.packager.wheelhouse import build_wheelhouse, manylinux_platforms
from edgeship.registry import Model
from edgeship.registry.blobs import sha256_file

SECTIONS = ["requirements.lock", "wheelhouse", "src", "azureml-models", "bundle.json"]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_wheelhouse(tmp_path_factory)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("bundle-world"))


def _build(world: World, wheelhouse: Path, out: Path, models: list[Model] | None = None) -> BundleInfo:
    return build_bundle(
        out / "bundle.tar",
        models=world.models if models is None else models,
        wheelhouse=wheelhouse,
        source_dir=world.source,
        entry_script=Path("score.py"),
    )


def _members(path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return {
            m.name: (m, tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_same_inputs_give_a_byte_identical_bundle(world: World, wheelhouse: Path, tmp_path: Path) -> None:
    first = _build(world, wheelhouse, tmp_path / "one")
    second = _build(world, wheelhouse, tmp_path / "two")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.digest == second.digest == "sha256:" + sha256_file(first.path)
    assert first.size == first.path.stat().st_size
    assert first.env_lock_digest == second.env_lock_digest


def test_entries_are_ordered_normalized_and_skip_build_debris(
    world: World, wheelhouse: Path, tmp_path: Path
) -> None:
    # the output folder lies inside the source folder, as `-o ./out` often does
    info = _build(world, wheelhouse, world.source / "out")
    with tarfile.open(info.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    keys = [(SECTIONS.index(n.split("/", 1)[0]), n) for n in names]
    assert keys == sorted(keys)
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() or m.name == "src/run.sh" else 0o644), m.name
        assert not {"mtime", "atime", "ctime"} & set(m.pax_headers)
    assert "src/score.py" in names and "src/pkg/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or ".git" in n or n.endswith(".pyc") or "out" in n]
    assert "azureml-models/weights/1/weights.bin" in names
    assert "azureml-models/labels/1/labels/nested/meta.json" in names
    descriptor = json.loads(_members(info.path)["bundle.json"][1])
    assert descriptor["entryScript"] == "src/score.py" == info.entry_script
    assert descriptor["envLockDigest"] == info.env_lock_digest
    assert [(m["name"], m["path"]) for m in descriptor["models"]] == [
        ("weights", "azureml-models/weights/1"),
        ("labels", "azureml-models/labels/1/labels"),
    ]
    lock = _members(info.path)["requirements.lock"][1]
    assert "sha256:" + hashlib.sha256(lock).hexdigest() == info.env_lock_digest
    wheels = [n for n in names if n.startswith("wheelhouse/") and n.endswith(".whl")]
    assert wheels and lock.decode().count("--hash=sha256:") == len(wheels)


def test_model_only_change_touches_only_the_model_tail(
    world: World, wheelhouse: Path, tmp_path: Path
) -> None:
    before = _build(world, wheelhouse, tmp_path / "v1")
    (tmp_path / "w2").mkdir()
    new_file = tmp_path / "w2" / "weights.bin"
    new_file.write_bytes(b"\x02" * 250_000)
    v2 = Model.register(world.workspace, new_file, "weights")
    after = _build(world, wheelhouse, tmp_path / "v2", models=[v2, world.models[1]])

    assert after.digest != before.digest
    assert after.env_lock_digest == before.env_lock_digest
    old, new = _members(before.path), _members(after.path)
    changed = {
        n for n in old.keys() | new.keys() if old.get(n, (None, b"?"))[1] != new.get(n, (None, b"!"))[1]
    }
    assert changed and all(n.startswith("azureml-models/weights/") or n == "bundle.json" for n in changed)
    # Every byte before the first model entry is shared: a device can fetch only the tail.
    with tarfile.open(before.path) as tar:
        first_model = next(m for m in tar.getmembers() if m.name.startswith("azureml-models"))
    a, b = before.path.read_bytes(), after.path.read_bytes()
    assert a[: first_model.offset] == b[: first_model.offset]


def test_a_corrupted_model_blob_aborts_and_leaves_no_bundle(tmp_path: Path, wheelhouse: Path) -> None:
    world = make_world(tmp_path / "w")
    blob = world.workspace.blobs_dir / world.models[0].digest.removeprefix("sha256:")
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(BlobCorruptedError, match="corrupted"):
        _build(world, wheelhouse, out)
    assert not list(out.iterdir())


def test_lock_pins_every_wheel_and_refuses_two_versions(tmp_path: Path) -> None:
    a = tmp_path / "Foo_Bar-1.0-py3-none-any.whl"
    a.write_bytes(b"a")
    text = render_lock([a])
    assert f"foo-bar==1.0 \\\n    --hash=sha256:{hashlib.sha256(b'a').hexdigest()}" in text
    b = tmp_path / "foo_bar-2.0-py3-none-any.whl"
    b.write_bytes(b"b")
    with pytest.raises(PackagingError, match=r"foo-bar 1\.0 and 2\.0"):
        render_lock([a, b])


@pytest.mark.slow
def test_bundle_wheelhouse_installs_offline_into_a_fresh_venv(
    world: World, wheelhouse: Path, tmp_path: Path
) -> None:
    info = _build(world, wheelhouse, tmp_path / "out")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(info.path) as tar:
        tar.extractall(unpacked, filter="data")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-index",
            "--find-links",
            str(unpacked / "wheelhouse"),
            "--require-hashes",
            "-r",
            str(unpacked / "requirements.lock"),
            "--quiet",
        ],
        check=True,
    )
    module = "edgeship.scoring" if importlib.util.find_spec("edgeship.scoring") else "edgeship"
    done = subprocess.run(
        [str(py), "-c", f"import {module}, onnxruntime, numpy; print('ok')"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "ok"


def test_second_wheelhouse_build_needs_no_network(
    tmp_path_factory: pytest.TempPathFactory,
    wheelhouse: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple")
    again = build_wheelhouse(
        [],
        tmp_path / "wh",
        cache_dir=session_wheel_cache(tmp_path_factory),
        platform=manylinux_platforms(),
        console=QUIET,
    )
    # edgeship's own wheel follows the live source tree, which may have changed meanwhile
    third_party = {p.name: sha256_file(p) for p in again if not p.name.startswith("edgeship-")}
    assert third_party == {p.name: sha256_file(p) for p in wheelhouse.glob("*.whl") if p.name in third_party}
    assert len(third_party) == len(again) - 1


def test_pip_failure_names_the_requirement(tmp_path: Path) -> None:
    with pytest.raises(PackagingError) as caught:
        build_wheelhouse(
            ["edgeship-no-such-distribution-xq==1.0"],
            tmp_path / "wh",
            include_edgeship=False,
            cache_dir=tmp_path / "cache",
            platform=manylinux_platforms(),
            console=QUIET,
        )
    message = str(caught.value)
    assert "edgeship-no-such-distribution-xq==1.0" in message and "No matching distribution" in message
    assert not (tmp_path / "wh").exists()
