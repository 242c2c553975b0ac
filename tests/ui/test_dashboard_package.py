"""The dashboard's templates and assets are package data, so a non-editable install serves the same pages.

A wheel built from a clean export (``pip wheel --no-deps .``) held all 28 files of
``edgeship/hub/ui``; this cheap check keeps pyproject's globs in step with the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "cloud-stub" / "ui"


def test_every_template_and_asset_is_listed_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "edgeship.hub.ui" in config["packages"]
    patterns = config["package-data"]["edgeship.hub.ui"]
    shipped = {p for p in UI.rglob("*") if p.is_file() and p.parts[len(UI.parts)] in ("templates", "static")}
    assert len(shipped) >= 20
    matched = {p for pattern in patterns for p in UI.glob(pattern)}  # setuptools' globs: '*' stays in one folder
    missed = sorted(str(p.relative_to(UI)) for p in shipped - matched)
    assert missed == [], f"add these to [tool.setuptools.package-data] 'edgeship.hub.ui': {missed}"
