"""The hub and schemaVersion 2 modules (ADR 0028): parts uploaded once across modules, served by digest with Range.

Real uvicorn and httpx; modules made from real bundles of tiny wheels and signed by the
world's release key.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
from hub_world import HubWorld

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from parts_world import Keys, model_bytes, signed_module, small_wheelhouse

from edgeship.hub.api import create_token
from edgeship.hub.client import HubClient
from edgeship.hub.services import HubServices
from edgeship.modules.manifest import MANIFEST_FILE, ModuleManifest
from edgeship.registry import Model
from edgeship.workspace import Workspace


def module(world: HubWorld, tmp_path: Path, name: str, seed: int) -> Path:
    ws = Workspace.at(tmp_path / "ws")
    if not ws.root.exists():
        ws.create()
    source = tmp_path / "models" / name / "model.onnx"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(model_bytes(seed))
    keys = Keys(release=world.release)
    return signed_module(tmp_path / "out" / name, name=name, version=1, models=[Model.register(ws, source, name)],
                         wheelhouse=small_wheelhouse(tmp_path / "wheels"), keys=keys, chunk_size=64 * 1024)


def test_parts_travel_once_and_are_served_by_digest_with_range(
    base_url: str, service: HubServices, world: HubWorld, tmp_path: Path
) -> None:
    first, second = module(world, tmp_path, "alpha", 1), module(world, tmp_path, "beta", 2)
    puts: list[str] = []

    def count(request: httpx.Request) -> None:
        if request.method == "PUT":
            puts.append(request.url.path.removeprefix("/uploads/"))

    with HubClient(base_url, create_token(service.store, "ci")) as hub:
        hub._http.event_hooks["request"].append(count)
        hub.upload_module_dir(first)
        uploaded_first = set(puts)
        puts.clear()
        hub.upload_module_dir(second)
    m1 = ModuleManifest.from_bytes((first / MANIFEST_FILE).read_bytes())
    m2 = ModuleManifest.from_bytes((second / MANIFEST_FILE).read_bytes())
    assert m1.parts is not None and m2.parts is not None
    wheels = {w.digest for w in m2.parts.wheels}
    assert wheels <= uploaded_first and not wheels & set(puts), "the shared wheels were uploaded with alpha only"
    assert {p.digest for p in m2.parts.all()} - {p.digest for p in m1.parts.all()} <= set(puts)

    chunk = m2.parts.models[0].chunks[2]
    url = f"{base_url}/blobs/{chunk.digest}"
    whole = httpx.get(url)
    assert whole.status_code == 200 and len(whole.content) == chunk.size
    tail = httpx.get(url, headers={"Range": "bytes=1000-"})
    assert tail.status_code == 206 and tail.content == whole.content[1000:]
    never_named = "sha256:" + "c" * 64
    assert httpx.get(f"{base_url}/blobs/{never_named}").status_code == 404
