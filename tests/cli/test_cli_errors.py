"""The CLI contract: help on every level, one-sentence errors, exit codes 2/1, --debug tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def edgeship(*args: str, workspace: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if workspace is not None:
        env["EDGESHIP_HOME"] = str(workspace)
    return subprocess.run(
        [sys.executable, "-m", "edgeship", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("args", [(), ("model",), ("model", "register"), ("model", "list"), ("init",)])
def test_help_on_every_level(args: tuple[str, ...]) -> None:
    result = edgeship(*args, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


def test_usage_error_exits_2() -> None:
    result = edgeship("model", "list", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_failure_is_one_sentence_exit_1_and_debug_shows_traceback(tmp_path: Path) -> None:
    result = edgeship("model", "list", workspace=tmp_path / "missing")
    assert result.returncode == 1
    assert result.stderr.startswith("error: No edgeship workspace at")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    debug = edgeship("--debug", "model", "list", workspace=tmp_path / "missing")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "WorkspaceError" in debug.stderr


def test_register_list_show_download_delete_round_trip(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert edgeship("init", workspace=ws).returncode == 0
    model = tmp_path / "model.onnx"
    model.write_bytes(b"bytes")
    reg = edgeship("model", "register", "-n", "digits", "-p", str(model), "--tag", "site=lab", workspace=ws)
    assert reg.returncode == 0, reg.stderr
    assert "digits version 1" in reg.stdout
    listed = json.loads(edgeship("model", "list", "--tag", "site=lab", "--json", workspace=ws).stdout)
    assert [(m["name"], m["version"]) for m in listed] == [("digits", 1)]
    shown = json.loads(edgeship("model", "show", "digits:1", workspace=ws).stdout)
    assert shown["framework"] == "onnx"
    down = edgeship("model", "download", "digits", "-o", str(tmp_path / "out"), workspace=ws)
    assert down.returncode == 0 and (tmp_path / "out" / "model.onnx").read_bytes() == b"bytes"
    bad = edgeship("model", "delete", "digits", workspace=ws)
    assert bad.returncode == 1 and "NAME:VERSION" in bad.stderr
    assert edgeship("model", "delete", "digits:1", workspace=ws).returncode == 0
    assert json.loads(edgeship("model", "list", "--json", workspace=ws).stdout) == []


def test_bad_tag_syntax_is_named(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    edgeship("init", workspace=ws)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    result = edgeship("model", "register", "-n", "m", "-p", str(model), "--tag", "novalue", workspace=ws)
    assert result.returncode == 1
    assert "Invalid tag 'novalue': write it as key=value." in result.stderr
    assert json.loads(edgeship("model", "list", "--json", workspace=ws).stdout) == []
