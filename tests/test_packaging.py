"""Packaging invariants: every package folder is listed, and the agent extra stays light."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAPPING = PYPROJECT["tool"]["setuptools"]["package-dir"]
HEAVY = {"onnx", "skl2onnx", "scikit-learn", "torch", "docker", "kubernetes-validate", "fastapi", "sqlalchemy",
         "alembic", "nats-py"}  # nats-py: the hub's shared inbound stream (ADR 0047), never on a device


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def _expand(extra: str, seen: set[str] | None = None) -> set[str]:
    seen = seen or set()
    names: set[str] = set()
    for req in PYPROJECT["project"]["optional-dependencies"][extra]:
        if req.startswith("edgeship["):
            for inner in req[len("edgeship[") : req.index("]")].split(","):
                if inner not in seen:
                    seen.add(inner)
                    names |= _expand(inner, seen)
        else:
            names.add(_req_name(req))
    return names


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for package, folder in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "_shims" in rel.parts:
                continue
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    # Sub-folders of the core that are themselves mapped components belong to their mapping.
    assert found - listed == set(), "add these packages to [tool.setuptools] packages"


def test_agent_extra_pulls_no_packager_quantizer_or_training_dependency() -> None:
    assert _expand("agent") & HEAVY == set()


def test_core_dependencies_are_small() -> None:
    core = {_req_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert core <= {"typer", "rich", "pydantic"}
