"""Content-addressed module parts at the device (ADR 0028): what is fetched, verified, kept and collected.

Real agent code (accept, plan, executor, part cache) against a real HTTP blob host
(``BlobServer``) that counts the body bytes it sends; signed modules made from real
bundles of tiny wheels and registered models (no venv is built here:
``test_agent_parts_install.py`` installs and serves).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from parts_world import CHUNK, changed, model_bytes
from parts_world import PartsWorld as World

from edgeship.agent.fetch.download import BlobCache, DigestMismatchError
from edgeship.agent.fetch.parts import PartCache, PartCacheFullError, part_location
from edgeship.agent.state.store import ServiceRecord
from edgeship.errors import ManifestError
from edgeship.modules.manifest import MANIFEST_FILE
from edgeship.modules.plain import Part, parse_manifest
from edgeship.modules.verify import ArtifactDigestError, UnlistedFileError, verify_module_dir


@pytest.fixture
def world(tmp_path: Path) -> World:
    built = World(tmp_path)
    yield built
    built.server.close()


def part_digests(directory: Path) -> set[str]:
    manifest = parse_manifest((directory / MANIFEST_FILE).read_bytes())
    assert manifest.parts is not None
    return {p.digest for p in manifest.parts.all()}


def test_a_v2_module_directory_verifies_and_a_flipped_byte_in_a_part_is_refused(world: World) -> None:
    module = world.module("digits", model_bytes(1))
    verified = verify_module_dir(module, world.keys.trust_root())
    assert verified.manifest.schema_version == 2 and verified.manifest.parts is not None
    assert len(verified.manifest.parts.models[0].chunks) == 7, "six whole chunks of 64 KiB and a tail"
    victim = module / "parts" / verified.manifest.parts.models[0].chunks[3].digest.removeprefix("sha256:")
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(ArtifactDigestError, match="altered or corrupted"):
        verify_module_dir(module, world.keys.trust_root())
    victim.write_bytes(bytes(data[:10]) + bytes([data[10] ^ 1]) + bytes(data[11:]))
    (module / "parts" / ("ab" * 32)).write_bytes(b"unsigned")
    with pytest.raises(UnlistedFileError, match="not covered by the signed manifest"):
        verify_module_dir(module, world.keys.trust_root())


def test_a_model_only_update_fetches_only_the_changed_chunk(world: World, tmp_path: Path) -> None:
    first = model_bytes(2)
    v1 = world.module("digits", first)
    v2 = world.module("digits", changed(first, 3 * CHUNK + 5))
    executor = world.executor(tmp_path / "device")
    world.fetch_and_verify(executor, {"digits": v1}, 1)
    mark = world.mark()
    world.fetch_and_verify(executor, {"digits": v2}, 2)
    sent, asked = world.served_since(mark)
    new = part_digests(v2) - part_digests(v1)
    assert set(asked) == new, "only parts the device lacks are asked for"
    m2 = parse_manifest((v2 / MANIFEST_FILE).read_bytes())
    assert m2.parts is not None
    chunk = next(c for c in m2.parts.models[0].chunks if c.digest in new)
    assert len(new) == 1 and sent == chunk.size == CHUNK, "one changed chunk: the source and wheels are the same"
    assert executor.parts.blobs.received == sum(p.size for p in m2.parts.all() if p.digest in new) + sum(
        p.size for p in parse_manifest((v1 / MANIFEST_FILE).read_bytes()).parts.all()  # type: ignore[union-attr]
    ), "the device counted the same bytes"


def test_a_second_module_with_the_same_wheels_downloads_no_wheel(world: World, tmp_path: Path) -> None:
    a = world.module("alpha", model_bytes(3))
    b = world.module("beta", model_bytes(4))
    executor = world.executor(tmp_path / "device")
    world.fetch_and_verify(executor, {"alpha": a}, 1)
    mark = world.mark()
    world.fetch_and_verify(executor, {"alpha": a, "beta": b}, 2)
    _sent, asked = world.served_since(mark)
    wheels = {w.digest for w in parse_manifest((b / MANIFEST_FILE).read_bytes()).parts.wheels}  # type: ignore[union-attr]
    assert wheels and not wheels & set(asked), "the wheels came with alpha and are not fetched for beta"
    assert asked, "beta's model chunks are fetched"


def test_a_v1_module_still_downloads_its_bundle(world: World, tmp_path: Path) -> None:
    old = world.module("legacy", model_bytes(5), schema=1)
    executor = world.executor(tmp_path / "device")
    world.fetch_and_verify(executor, {"legacy": old}, 1)
    manifest = parse_manifest((old / MANIFEST_FILE).read_bytes())
    assert manifest.schema_version == 1 and manifest.parts is None
    assert [path for path, _ in world.server.requests] == [f"/blobs/{manifest.bundle.digest}"]
    assert (tmp_path / "device" / "modules" / "legacy.a" / "bundle.tar").is_file()


def test_a_part_the_host_altered_is_refused_and_not_kept(world: World, tmp_path: Path) -> None:
    module = world.module("digits", model_bytes(6))
    manifest = parse_manifest((module / MANIFEST_FILE).read_bytes())
    assert manifest.parts is not None
    target = manifest.parts.models[0].chunks[0]
    served = world.server.root / target.digest.removeprefix("sha256:")
    served.write_bytes(b"\0" * target.size)  # same size, other bytes
    executor = world.executor(tmp_path / "device")
    with pytest.raises(DigestMismatchError, match="altered or corrupted"):
        world.fetch_and_verify(executor, {"digits": module}, 1)
    assert not executor.parts.has(target.digest)
    assert not list((tmp_path / "device" / "parts" / "partial").glob("*"))


def test_a_fetch_killed_midway_resumes_where_it_stopped(world: World, tmp_path: Path) -> None:
    data = model_bytes(7, 2 * CHUNK)
    module = world.module("digits", data)
    manifest = parse_manifest((module / MANIFEST_FILE).read_bytes())
    assert manifest.parts is not None
    chunk = manifest.parts.models[0].chunks[0]
    world.server.trickle_interval = 0.002
    world.server.misbehave(chunk.digest, "trickle")
    cache = tmp_path / "device" / "parts"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys; from edgeship.agent.fetch.download import BlobCache;"
        "from edgeship.agent.fetch.parts import PartCache;"
        "from edgeship.modules.plain import Part;"
        "PartCache(BlobCache(sys.argv[1], sys.argv[2])).fetch(sys.argv[3], [Part(sys.argv[4], int(sys.argv[5]))])"
    ), str(cache), world.url, f"/blobs/{manifest.bundle.digest}", chunk.digest, str(chunk.size)])  # fmt: skip
    partial = cache / "partial" / (chunk.digest.removeprefix("sha256:") + ".part")
    deadline = time.monotonic() + 30
    while (not partial.is_file() or partial.stat().st_size < 100) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    kept = partial.stat().st_size
    assert 100 <= kept < chunk.size
    world.server.misbehave(chunk.digest, None)
    mark = len(world.server.requests)
    parts = PartCache(BlobCache(cache, world.url))
    path = parts.fetch(f"/blobs/{manifest.bundle.digest}", [Part(chunk.digest, chunk.size)])[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == chunk.digest.removeprefix("sha256:")
    assert world.server.requests[mark][1] is not None and int(world.server.requests[mark][1][6:-1]) >= kept
    assert parts.blobs.received == chunk.size - int(world.server.requests[mark][1][6:-1])


def test_collection_removes_parts_no_module_needs_and_never_a_needed_one(world: World, tmp_path: Path) -> None:
    first = model_bytes(8)
    v1 = world.module("digits", first)
    v2 = world.module("digits", changed(first, CHUNK + 1))
    executor = world.executor(tmp_path / "device")
    world.fetch_and_verify(executor, {"digits": v1}, 1)
    executor.state.put_service(ServiceRecord(service="digits.a", module="digits", version=1,
                                             module_digest="sha256:" + "1" * 64, lock_digest="sha256:" + "2" * 64))
    world.fetch_and_verify(executor, {"digits": v2}, 2)  # verified into digits.b, not yet recorded
    assert part_digests(v1) | part_digests(v2) <= set(executor.parts.cached())
    executor.forget("digits.a")  # the old slot removed after the switch: its parts no one else needs go
    cached = set(executor.parts.cached())
    assert part_digests(v2) <= cached, "the accepted document's parts stay"
    assert not (part_digests(v1) - part_digests(v2)) & cached, "the old model's own chunk is deleted"


def test_the_part_cache_bound_deletes_unneeded_parts_first_and_refuses_what_cannot_fit(tmp_path: Path) -> None:
    cache = PartCache(BlobCache(tmp_path / "parts", "http://127.0.0.1:9"), max_bytes=300)
    folder = tmp_path / "parts" / "sha256"
    folder.mkdir(parents=True)
    made = {}
    for i, size in enumerate((100, 100, 100)):
        data = bytes([i]) * size
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (folder / digest.removeprefix("sha256:")).write_bytes(data)
        os.utime(folder / digest.removeprefix("sha256:"), ns=(i * 10**9, i * 10**9))
        made[i] = digest
    wanted = [Part("sha256:" + "f" * 64, 100)]
    cache.make_room(wanted, keep={made[0]})
    assert set(cache.cached()) == {made[0], made[2]}, "the oldest unneeded part went, the needed one stayed"
    with pytest.raises(PartCacheFullError, match="part_cache_bytes"):
        cache.make_room([Part("sha256:" + "e" * 64, 250)], keep={made[0], made[2]})
    assert set(cache.cached()) == {made[0], made[2]}, "needed parts are never deleted to make room"


def test_a_part_lies_beside_the_bundle_and_a_location_without_a_path_is_refused() -> None:
    digest = "sha256:" + "a" * 64
    assert part_location("/blobs/sha256:" + "b" * 64, digest) == "/blobs/" + digest
    assert part_location("https://cdn.example/m/sha256:" + "b" * 64, digest) == "https://cdn.example/m/" + digest
    with pytest.raises(Exception, match="has no path"):
        part_location("bundle", digest)


def test_a_manifest_edited_after_signing_is_refused_at_the_device(world: World, tmp_path: Path) -> None:
    module = world.module("digits", model_bytes(9))
    executor = world.executor(tmp_path / "device")
    world.fetch_and_verify(executor, {"digits": module}, 1)
    folder = tmp_path / "device" / "modules" / "digits.a"
    (folder / MANIFEST_FILE).write_bytes((folder / MANIFEST_FILE).read_bytes().replace(b'"digits"', b'"digitz"'))
    from edgeship.modules.verify import verify_parts_dir

    with pytest.raises(ManifestError, match="edited after signing"):
        verify_parts_dir(folder, world.keys.trust_root())
