"""A small world for bundle and image tests: a workspace with models, a source folder, one wheelhouse.

The wheelhouse (edgeship's scoring runtime for manylinux, about 50 MB) is built once
per test session under pytest's base temp folder and shared by every module that
asks for it; set ``EDGESHIP_TEST_WHEEL_CACHE`` to keep downloaded wheels between runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from edgeship.packager.wheelhouse import build_wheelhouse, manylinux_platforms
from edgeship.registry import Model
from edgeship.workspace import Workspace

__all__ = ["World", "make_world", "session_wheel_cache", "session_wheelhouse"]

QUIET = Console(quiet=True)

SCORE_PY = """\
import glob
import json
import os

model_bytes = None


def init():
    global model_bytes
    root = os.environ["AZUREML_MODEL_DIR"]
    path = glob.glob(os.path.join(root, "**", "weights.bin"), recursive=True)[0]
    with open(path, "rb") as handle:
        model_bytes = handle.read()


def run(data):
    return {"model_size": len(model_bytes), "echo": json.loads(data)}
"""


@dataclass
class World:
    workspace: Workspace
    source: Path
    models: list[Model]


def session_wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("EDGESHIP_TEST_WHEEL_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "packager-wheel-cache"


def session_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the shared wheelhouse on first use; later callers get the same folder."""
    dest = tmp_path_factory.getbasetemp() / "packager-wheelhouse"
    if not dest.is_dir():
        build_wheelhouse(
            [],
            dest,
            cache_dir=session_wheel_cache(tmp_path_factory),
            platform=manylinux_platforms(),
            console=QUIET,
        )
    return dest


def make_world(root: Path, *, weights: bytes = b"\x01" * 200_000) -> World:
    """A workspace with a file model ``weights`` and a folder model ``labels``, and a source folder."""
    ws = Workspace.at(root / "ws")
    ws.create()
    files = root / "model-files"
    files.mkdir()
    (files / "weights.bin").write_bytes(weights)
    folder = files / "labels"
    (folder / "nested").mkdir(parents=True)
    (folder / "classes.txt").write_text("zero\none\n")
    (folder / "nested" / "meta.json").write_text('{"k": 1}\n')
    src = root / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / "score.py").write_text(SCORE_PY)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (src / "stray.pyc").write_bytes(b"\0")
    tool = src / "run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o775)
    models = [
        Model.register(ws, files / "weights.bin", "weights"),
        Model.register(ws, folder, "labels"),
    ]
    return World(ws, src, models)
