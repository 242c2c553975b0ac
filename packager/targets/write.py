"""Rendering target documents to text, and the one place that writes them to disk.

Why split: the packager signs every file of a module, so it needs the exact
bytes (:func:`render_target`) before anything touches the disk; the CLI and
tests write them with :func:`write_target`, atomically, one file at a time.
YAML keeps the documents' natural order (``apiVersion`` first, as people read
them); JSON is sorted so the same spec always gives the same bytes. Files
that carry auth keys are written 0600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edgeship.errors import InputError
from edgeship.fsutil import atomic_write_text

from .aci import aci_container_group
from .aks import aks_manifests
from .iotedge import iotedge_manifest, iotedge_template
from .spec import TargetSpec

__all__ = ["TARGETS", "TARGET_FILES", "render_target", "write_target"]

TARGETS = ("local", "aci", "aks", "iotedge")
TARGET_FILES = {
    "local": (),
    "aci": ("aci.yaml",),
    "aks": ("kubernetes.yaml",),
    "iotedge": ("deployment.json", "deployment.template.json"),
}


def _yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_target(target: str, spec: TargetSpec) -> dict[str, str]:
    """File name -> text of every artifact ``target`` needs (``local`` needs none)."""
    if target == "aci":
        return {"aci.yaml": _yaml([aci_container_group(spec)])}
    if target == "aks":
        return {"kubernetes.yaml": _yaml(aks_manifests(spec))}
    if target == "iotedge":
        return {
            "deployment.json": _json(iotedge_manifest(spec)),
            "deployment.template.json": _json(iotedge_template(spec)),
        }
    if target == "local":
        return {}
    raise InputError(f"unknown target '{target}'; use one of {', '.join(TARGETS)}")


def write_target(target: str, spec: TargetSpec, out_dir: str | Path) -> list[Path]:
    """Write ``target``'s artifacts into ``out_dir`` (created if missing); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if spec.key_env else 0o644
    written: list[Path] = []
    for name, text in render_target(target, spec).items():
        path = out / name
        atomic_write_text(path, text, mode=mode)
        written.append(path)
    return written
