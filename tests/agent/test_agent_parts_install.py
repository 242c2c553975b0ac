"""Installing from parts with the process runtime (ADR 0028): the same app as from the bundle, a venv reused.

Real agent code (accept, plan, executor, ``ProcessRuntime``) and a real blob host; the
modules hold two tiny installable wheels, so the venv is real but quick to build (the
scoring server itself is started by the runtime contract tests, not here).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from parts import port_block
from parts_world import CHUNK, PartsWorld, changed, model_bytes

from edgeship.agent.decide.plan import CurrentState, plan
from edgeship.agent.execute import RuntimeExecutor
from edgeship.agent.reconcile import desired_from
from edgeship.agent.runtimes.process import ProcessRuntime
from edgeship.modules.manifest import MANIFEST_FILE
from edgeship.modules.plain import parse_manifest


@pytest.fixture
def world(tmp_path: Path) -> Iterator[PartsWorld]:
    built = PartsWorld(tmp_path)
    yield built
    built.server.close()


def install(world: PartsWorld, executor: RuntimeExecutor, name: str, module: Path, sequence: int) -> Path:
    """Fetch, verify and install ``module`` as ``name``'s candidate; the app folder the runtime made."""
    accepted = world.accept({name: module}, sequence)
    executor.document = accepted
    for command in plan(desired_from(accepted), CurrentState(datetime.now(timezone.utc))):
        if command.kind in ("check_space", "download", "verify", "install"):
            executor.execute(command)
    manifest = accepted.manifests[name]
    runtime = executor.runtime
    assert isinstance(runtime, ProcessRuntime)
    return runtime.app_dir(manifest.name, manifest.version)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".bundle-digest"}  # fmt: skip


def test_v1_and_v2_modules_install_the_same_app_and_a_model_update_reuses_the_venv(
    world: PartsWorld, tmp_path: Path
) -> None:
    model = model_bytes(11)
    v1 = world.module("digits", model, schema=1)
    v2 = world.module("digits", model)
    first = port_block(4)
    from_bundle = install(world, world.executor(tmp_path / "one", ports=(first, first + 1)), "digits", v1, 1)
    device = world.executor(tmp_path / "two", ports=(first + 2, first + 3))
    from_parts = install(world, device, "digits", v2, 1)
    bundled = tree(from_bundle)
    assert bundled.pop("bundle.json"), "the bundle's description is not a part (it would change with every model)"
    assert tree(from_parts) == bundled, "the parts give exactly what the bundle gives"
    runtime = device.runtime
    assert isinstance(runtime, ProcessRuntime)
    manifest = parse_manifest((v2 / MANIFEST_FILE).read_bytes())
    venv = runtime.venv_dir(manifest.environment.lock_digest)
    assert (venv / "bin" / "python").exists(), "the venv was built from the wheel parts"

    v3 = world.module("digits", changed(model, 4 * CHUNK))
    mark = world.mark()
    app = install(world, device, "digits", v3, 2)
    _sent, asked = world.served_since(mark)
    m3 = parse_manifest((v3 / MANIFEST_FILE).read_bytes())
    assert m3.parts is not None and manifest.parts is not None
    before = {c.digest for c in manifest.parts.models[0].chunks}
    assert set(asked) == {c.digest for c in m3.parts.models[0].chunks} - before, "only the changed chunk travels"
    assert (app / m3.parts.models[0].path).read_bytes() == changed(model, 4 * CHUNK)
    assert not (app / "wheelhouse").exists(), "a model-only update needs no wheels: the venv is there"
