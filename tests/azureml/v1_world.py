"""Helpers of the Azure ML v1 tests: one edgeship workspace per test file, with the demo's warm wheel cache.

Scripts run as a user runs them: ``python -m edgeship azureml run deploy.py`` in a folder
holding the sample's files, with ``EDGESHIP_HOME`` naming the workspace. The workspace
is shared by a file's tests so the module environment (scikit-learn, scipy) is built
into a venv once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "azureml_v1"


@dataclass
class V1World:
    home: Path
    root: Path

    def folder(self, name: str, *files: Path) -> Path:
        """A working folder with ``files`` and the notebooks' model file, as a user's project folder."""
        work = self.root / name
        work.mkdir()
        for file in files:
            shutil.copy(file, work / file.name)
        shutil.copy(self.root / "sklearn_regression_model.pkl", work / "sklearn_regression_model.pkl")
        return work

    def run(self, work: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgeship", *args], cwd=work, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "EDGESHIP_HOME": str(self.home), **(env or {})}, check=False,
        )


def make_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V1World]:
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    from edgeship.demo.release import wheel_cache_dir

    root = tmp_path_factory.mktemp("azureml-v1")
    home = root / "edgeship-home"
    (home / "cache").mkdir(parents=True)
    wheels = wheel_cache_dir()
    wheels.mkdir(parents=True, exist_ok=True)
    (home / "cache" / "wheels").symlink_to(wheels, target_is_directory=True)  # warm, as the demo's
    # The process runtime's venvs (one per environment lock, built in scratch and renamed into place) are
    # kept between runs too: scikit-learn and scipy take a minute to install offline on a loaded machine.
    venvs = wheels.parent / "azureml-test-venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    (home / "services" / "process").mkdir(parents=True)
    (home / "services" / "process" / "venvs").symlink_to(venvs, target_is_directory=True)
    features, target = load_diabetes(return_X_y=True)
    joblib.dump(Ridge().fit(features, target), root / "sklearn_regression_model.pkl")  # the notebooks' model
    world = V1World(home, root)
    yield world
    for record in (home / "services").glob("*.json"):  # never leave a server running
        world.run(root, "service", "delete", record.stem)
