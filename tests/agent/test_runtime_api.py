"""The runtimes' public surface, and that importing it costs a Docker-less device nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import edgeship.agent.runtimes as runtimes
from edgeship.agent.runtimes import ModuleRuntime, ModuleSpec, ProcessRuntime
from edgeship.errors import RuntimeFailure

EXPECTED = {
    "KEY_ENV_VARS",
    "RESTART_POLICIES",
    "DockerRuntime",
    "ModuleRuntime",
    "ModuleSpec",
    "ModuleState",
    "ModuleStatus",
    "ProcessLimits",
    "ProcessRuntime",
    "RestartPolicy",
    "UnknownServiceError",
    "probe_health",
    "unpack_bundle",
    "v2_model_name",
}


def test_exported_members_are_pinned() -> None:
    assert set(runtimes.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(runtimes, name) is not None


def test_process_runtime_implements_the_protocol(tmp_path: Path) -> None:
    assert isinstance(ProcessRuntime(tmp_path), ModuleRuntime)


def test_the_supervisor_process_imports_no_pydantic() -> None:
    """It starts at every update, before the scoring server: its start-up is on the update's path."""
    code = "import sys, edgeship.agent.runtimes.supervisor; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_importing_the_runtimes_does_not_import_the_docker_sdk() -> None:
    code = "import sys, edgeship.agent.runtimes; print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Bad Name", "Service name 'Bad Name' is not usable"),
        ("port", 0, "Port 0 is out of range"),
        ("restart", "sometimes", "Restart policy 'sometimes' is unknown"),
        ("auth_keys", ("a", "b", "c"), "at most two non-empty auth keys"),
    ],
)
def test_a_bad_spec_is_refused_with_one_sentence(field: str, value: object, message: str) -> None:
    from edgeship.modules.manifest import BundleRef, EnvironmentRef, ModuleManifest

    digest = "sha256:" + "0" * 64
    manifest = ModuleManifest(
        name="m",
        version=1,
        models=[],
        environment=EnvironmentRef(lockDigest=digest, python="3.11"),
        bundle=BundleRef(digest=digest, size=0),
        files=[],
    )
    args: dict[str, object] = {"name": "ok", "module_dir": Path("."), "manifest": manifest, "port": 8000}
    args[field] = value
    with pytest.raises(RuntimeFailure, match=message):
        ModuleSpec(**args)  # type: ignore[arg-type]
