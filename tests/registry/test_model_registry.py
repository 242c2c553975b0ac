"""Model registry: Azure ML v1 Model semantics over the content-addressed store."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship.errors import BlobCorruptedError, InputError, ModelNotFoundError, WorkspaceError
from edgeship.registry import Model
from edgeship.workspace import Workspace


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _registry_rows(ws: Workspace) -> list[tuple[object, ...]]:
    with sqlite3.connect(ws.db_path) as conn:
        return conn.execute("SELECT name, version, digest FROM models ORDER BY name, version").fetchall()


def test_versions_auto_increment_per_name(workspace: Workspace, tmp_path: Path) -> None:
    model = _write(tmp_path / "m.onnx", b"onnx-bytes")
    first = Model.register(workspace, model, "digits")
    second = Model.register(workspace, model, "digits")
    other = Model.register(workspace, model, "other")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.digest == "sha256:" + hashlib.sha256(b"onnx-bytes").hexdigest()
    assert first.model_framework == "onnx"


def test_identical_files_are_stored_once(workspace: Workspace, tmp_path: Path) -> None:
    _write(tmp_path / "a" / "weights.bin", b"same")
    _write(tmp_path / "b" / "weights.bin", b"same")
    Model.register(workspace, tmp_path / "a", "a")
    Model.register(workspace, tmp_path / "b", "b")
    blobs = list(workspace.blobs_dir.iterdir())
    assert [p.name for p in blobs] == [hashlib.sha256(b"same").hexdigest()]


def test_folder_model_keeps_its_layout_and_tags(workspace: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    _write(root / "model.tflite", b"tfl")
    _write(root / "labels" / "classes.txt", b"cat\ndog\n")
    model = Model.register(
        workspace, root, "pets", tags={"site": "lab"}, properties={"acc": "0.9"}, description="pets"
    )
    assert model.model_framework == "tflite"
    assert [f.relpath for f in model.record.files] == ["labels/classes.txt", "model.tflite"]
    path = Path(Model.get_model_path("pets", _workspace=workspace))
    assert path.name == "outputs"
    assert (path / "labels" / "classes.txt").read_bytes() == b"cat\ndog\n"
    assert Model.list(workspace, tags={"site": "lab"})[0].properties == {"acc": "0.9"}
    assert Model.list(workspace, tags={"site": "other"}) == []


def test_get_model_path_defaults_to_newest_version(workspace: Workspace, tmp_path: Path) -> None:
    Model.register(workspace, _write(tmp_path / "v1" / "m.onnx", b"one"), "m")
    Model.register(workspace, _write(tmp_path / "v2" / "m.onnx", b"two"), "m")
    assert Path(Model.get_model_path("m", _workspace=workspace)).read_bytes() == b"two"
    assert Path(Model.get_model_path("m", version=1, _workspace=workspace)).read_bytes() == b"one"


def test_download_writes_a_verified_copy(workspace: Workspace, tmp_path: Path) -> None:
    Model.register(workspace, _write(tmp_path / "m.onnx", b"payload"), "m")
    out = Model.get(workspace, "m").download(tmp_path / "out")
    assert Path(out).read_bytes() == b"payload"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m.onnx"]  # no scratch folder left
    with pytest.raises(InputError, match="already exists"):
        Model.get(workspace, "m").download(tmp_path / "out")


def test_delete_removes_version_and_unshared_blobs(workspace: Workspace, tmp_path: Path) -> None:
    Model.register(workspace, _write(tmp_path / "m.onnx", b"shared"), "a")
    Model.register(workspace, _write(tmp_path / "m.onnx", b"shared"), "b")
    Model.register(workspace, _write(tmp_path / "x.onnx", b"only-a"), "a")
    Model.get(workspace, "a", 2).delete()
    assert workspace.blobs_dir.joinpath(hashlib.sha256(b"only-a").hexdigest()).exists() is False
    Model.get(workspace, "a", 1).delete()
    assert workspace.blobs_dir.joinpath(hashlib.sha256(b"shared").hexdigest()).exists()
    assert [m.id for m in Model.list(workspace)] == ["b:1"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("bad name", "Invalid model name"), ("-lead", "Invalid model name"), ("x" * 256, "Invalid model name")],
)
def test_bad_names_are_refused_and_registry_unchanged(
    workspace: Workspace, tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        Model.register(workspace, _write(tmp_path / "m.onnx", b"x"), name)
    assert _registry_rows(workspace) == []
    assert list(workspace.blobs_dir.iterdir()) == []


def test_missing_path_and_empty_folder_are_clear_errors(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        Model.register(workspace, tmp_path / "nope.onnx", "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is empty"):
        Model.register(workspace, tmp_path / "empty", "m")
    assert _registry_rows(workspace) == []


def test_unknown_model_and_version_name_what_exists(workspace: Workspace, tmp_path: Path) -> None:
    Model.register(workspace, _write(tmp_path / "m.onnx", b"x"), "m")
    with pytest.raises(ModelNotFoundError, match="No model named 'zz'"):
        Model.get(workspace, "zz")
    with pytest.raises(ModelNotFoundError, match="known versions: 1"):
        Model.get(workspace, "m", 7)


def test_corrupted_blob_is_detected_on_read(workspace: Workspace, tmp_path: Path) -> None:
    model = Model.register(workspace, _write(tmp_path / "m.onnx", b"good bytes"), "m")
    blob = workspace.blobs_dir / model.digest.removeprefix("sha256:")
    blob.chmod(0o644)
    blob.write_bytes(b"evil bytes")
    with pytest.raises(BlobCorruptedError, match="corrupted"):
        Model.get(workspace, "m").download(tmp_path / "out")
    with pytest.raises(BlobCorruptedError):
        Model.get_model_path("m", _workspace=workspace)
    assert not (tmp_path / "out").exists()
    assert not (workspace.cache_dir / "models" / "m" / "1").exists()


def test_uninitialised_workspace_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="edgeship init"):
        Model.list(Workspace.at(tmp_path / "none"))


_CONCURRENT = """
import sys
from pathlib import Path
from edgeship.registry import Model
from edgeship.workspace import Workspace
ws = Workspace.at(sys.argv[1])
path = Path(sys.argv[2])
print(",".join(str(Model.register(ws, path, "race").version) for _ in range(int(sys.argv[3]))))
"""


def test_concurrent_registers_from_processes_get_distinct_versions(workspace: Workspace, tmp_path: Path) -> None:
    procs = []
    for i in range(4):
        model = _write(tmp_path / f"p{i}" / "m.onnx", f"model-{i}".encode())
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _CONCURRENT, str(workspace.root), str(model), "5"],
                stdout=subprocess.PIPE,
                env={**os.environ},
                text=True,
            )
        )
    versions: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        versions.extend(int(v) for v in out.strip().split(","))
    assert sorted(versions) == list(range(1, 21))
    records = Model.list(workspace, name="race")
    assert len(records) == 20
    # Nothing lost: every version's bytes are intact and match one of the four inputs.
    contents = {Path(Model.get_model_path("race", m.version, _workspace=workspace)).read_bytes() for m in records}
    assert contents == {f"model-{i}".encode() for i in range(4)}


def test_record_serializes_to_json(workspace: Workspace, tmp_path: Path) -> None:
    model = Model.register(workspace, _write(tmp_path / "m.onnx", b"x"), "m", tags={"a": "b"})
    data = json.loads(json.dumps(model.serialize()))
    assert data["name"] == "m" and data["version"] == 1 and data["tags"] == {"a": "b"}
    assert data["files"][0]["digest"] == model.digest
