"""A packaging world shared by the packager tests: the digits example trained, registered and a release key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeship.signing import Keyring
from edgeship.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sklearn-digits"


@dataclass(frozen=True)
class DigitsProject:
    workspace: Workspace
    project: Path  # a copy of examples/sklearn-digits with its configs
    model_file: Path

    @property
    def ic(self) -> Path:
        return self.project / "inferenceconfig.json"

    @property
    def dc(self) -> Path:
        return self.project / "deploymentconfig.json"


@pytest.fixture(scope="session")
def digits_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DigitsProject]:
    root = tmp_path_factory.mktemp("digits-project")
    project = root / "sklearn-digits"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    ws = Workspace.at(root / "ws")
    ws.create()
    subprocess.run(
        [sys.executable, str(project / "train.py"), "--output-dir", str(root / "trained"), "--register",
         "--workspace", str(ws.root)],
        check=True,
        capture_output=True,
        env={**os.environ, "EDGESHIP_HOME": str(ws.root)},
    )
    Keyring(ws).create("release")
    yield DigitsProject(ws, project, root / "trained" / "digits.onnx")
