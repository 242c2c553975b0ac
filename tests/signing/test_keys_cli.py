"""``edgeship keys ...`` end to end through the real typer app (and once through a subprocess)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import InputError, SigningKeyError, UnknownKeyError
from edgeship.signing import (
    DEPLOYMENT_PAYLOAD_TYPE,
    load_signer,
    load_trust_root,
    rotate,
    sign_envelope,
    verify_envelope,
)
from edgeship.workspace import Workspace

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _fails(*args: str) -> BaseException:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0
    assert result.exception is not None
    return result.exception


def test_create_list_and_export_public(workspace: Workspace, tmp_path: Path) -> None:
    out = _ok("keys", "create", "--role", "release")
    assert "Created release key release" in out
    created = json.loads(_ok("keys", "create", "--role", "hub", "--name", "hub-a", "--json"))
    assert created["role"] == "hub" and len(created["keyid"]) == 64
    listed = json.loads(_ok("keys", "list", "--json"))
    assert [k["name"] for k in listed] == ["hub-a", "release"]
    exported = json.loads(_ok("keys", "export-public", "hub-a"))
    assert exported == created
    target = tmp_path / "hub-a.pub.json"
    _ok("keys", "export-public", "hub-a", "-o", str(target))
    assert json.loads(target.read_text()) == created
    private = (workspace.keys_dir / "hub-a.key").read_text()
    assert stat.S_IMODE((workspace.keys_dir / "hub-a.key").stat().st_mode) == 0o600
    for output in (out, json.dumps(listed), json.dumps(exported)):
        assert private.splitlines()[1] not in output


def test_create_twice_is_a_clear_error(workspace: Workspace) -> None:
    _ok("keys", "create", "--role", "release")
    assert isinstance(_fails("keys", "create", "--role", "release"), SigningKeyError)


def test_trust_root_requires_a_root_key(workspace: Workspace, tmp_path: Path) -> None:
    _ok("keys", "create", "--role", "release")
    _ok("keys", "create", "--role", "hub")
    error = _fails(
        "keys", "trust-root", "-o", str(tmp_path / "t.json"), "--release", "release", "--hub", "hub"
    )
    assert isinstance(error, SigningKeyError) and "--role root" in str(error)
    assert not (tmp_path / "t.json").exists()


def test_trust_root_refuses_a_key_of_another_role(workspace: Workspace, tmp_path: Path) -> None:
    for role in ("root", "release", "hub"):
        _ok("keys", "create", "--role", role)
    error = _fails("keys", "trust-root", "-o", str(tmp_path / "t.json"), "--release", "hub", "--hub", "hub")
    assert isinstance(error, InputError) and "created for role hub" in str(error)


def test_trust_root_then_rotation_retires_the_old_hub_key(workspace: Workspace, tmp_path: Path) -> None:
    for role in ("root", "release", "hub"):
        _ok("keys", "create", "--role", role)
    first, second = tmp_path / "root-v1.json", tmp_path / "root-v2.json"
    _ok("keys", "trust-root", "-o", str(first), "--release", "release", "--hub", "hub")
    root_v1 = load_trust_root(first.read_bytes())
    assert root_v1.version == 1

    _ok("keys", "create", "--role", "hub", "--name", "hub-2")
    out = _ok(
        "keys", "trust-root", "-o", str(second), "--previous", str(first),
        "--release", "release", "--hub", "hub-2",
    )  # fmt: skip
    assert "version 2" in out
    root_v2 = rotate(root_v1, second.read_bytes())

    old_doc = sign_envelope(b"{}", DEPLOYMENT_PAYLOAD_TYPE, [load_signer(workspace, "hub")])
    assert verify_envelope(old_doc, root_v1, "hub", DEPLOYMENT_PAYLOAD_TYPE) == b"{}"
    with pytest.raises(UnknownKeyError, match="matches no trusted hub key"):
        verify_envelope(old_doc, root_v2, "hub", DEPLOYMENT_PAYLOAD_TYPE)


def test_trust_root_with_unmeetable_threshold_writes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    for role in ("root", "release", "hub"):
        _ok("keys", "create", "--role", role)
    target = tmp_path / "t.json"
    error = _fails(
        "keys",
        "trust-root",
        "-o",
        str(target),
        "--release",
        "release",
        "--hub",
        "hub",
        "--hub-threshold",
        "2",
    )
    assert "threshold 2 with 1 keys" in str(error)
    assert not target.exists()


def test_error_is_one_sentence_on_stderr_with_exit_code_1(workspace: Workspace) -> None:
    env = {**os.environ, "EDGESHIP_HOME": str(workspace.root)}
    command = [sys.executable, "-m", "edgeship", "keys", "export-public", "missing"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: No key named 'missing'")
    assert "Traceback" not in result.stderr
