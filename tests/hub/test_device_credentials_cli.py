"""``edgeship device create|rotate-credentials|delete`` against a real HubServer (uvicorn, bridge, Mosquitto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_workspace import make_hub_workspace
from typer.testing import CliRunner, Result

from edgeship.cli import app
from edgeship.errors import ConfigError
from edgeship.hub.api import create_token
from edgeship.hub.server import HubConfig, HubServer
from edgeship.workspace import Workspace


@pytest.fixture
def hub_ws(tmp_path: Path) -> Workspace:
    ws, _world = make_hub_workspace(tmp_path / "hubws")
    return ws


@pytest.fixture
def cli(hub_ws: Workspace, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    with HubServer(HubConfig(workspace=hub_ws.root, broker_url=mosquitto.url, port=0)) as hub:
        monkeypatch.setenv("EDGESHIP_HUB_URL", hub.api_url)
        monkeypatch.setenv("EDGESHIP_HUB_TOKEN", create_token(hub.store, "tests"))
        monkeypatch.setenv("COLUMNS", "200")
        yield CliRunner()


def run(cli: CliRunner, *args: str, ok: bool = True, stdin: str | None = None) -> Result:
    result = cli.invoke(app, list(args), input=stdin)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_the_password_is_printed_once_and_delete_asks_first(cli: CliRunner, hub_ws: Workspace) -> None:
    out = run(cli, "device", "create", "dev-1", "--tag", "site=lab").stdout
    assert "Broker username dev-1, password " in out and "not shown again" in out
    password = out.split("password ", 1)[1].split()[0]
    assert len(password) >= 22
    assert password not in run(cli, "device", "show", "dev-1", "--json").stdout

    rotated = run(cli, "device", "rotate-credentials", "dev-1").stdout
    assert "Broker username dev-1, password " in rotated and password not in rotated

    declined = run(cli, "device", "delete", "dev-1", stdin="n\n", ok=False)
    assert declined.exit_code == 1 and "was not deleted; pass --yes" in str(declined.exception)
    assert "Deleted device dev-1" in run(cli, "device", "delete", "dev-1", stdin="y\n").stdout
    missing = run(cli, "device", "rotate-credentials", "dev-1", ok=False)
    assert missing.exit_code == 1 and "No device 'dev-1'" in str(missing.exception)


def test_a_certificate_device_prints_its_key_and_certificate_from_the_workspace_ca(
    cli: CliRunner, hub_ws: Workspace
) -> None:
    answer = json.loads(run(cli, "device", "create", "dev-c", "--certificate", "--json").stdout)
    creds = answer["credentials"]
    assert creds["kind"] == "certificate" and "BEGIN PRIVATE KEY" in creds["privateKey"]
    assert creds["caCertificate"] == (hub_ws.root / "broker-ca" / "ca.pem").read_text()
    assert (hub_ws.root / "broker-ca" / "ca.key").stat().st_mode & 0o077 == 0
    printed = run(cli, "device", "rotate-credentials", "dev-c").stdout
    assert "BEGIN PRIVATE KEY" in printed and "BEGIN CERTIFICATE" in printed


def test_a_hub_whose_broker_folder_cannot_be_managed_does_not_start(hub_ws: Workspace, mosquitto: Any,
                                                                    tmp_path: Path) -> None:
    config = HubConfig(workspace=hub_ws.root, broker_url=mosquitto.url, port=0, broker_config_dir=tmp_path / "none")
    with pytest.raises(ConfigError, match="no password line for the hub user"):
        HubServer(config).start()
    (tmp_path / "folder").mkdir()
    config = HubConfig(workspace=hub_ws.root, broker_url=mosquitto.url, port=0, broker_password="pw",
                       broker_config_dir=tmp_path / "folder", broker_pid_file=tmp_path / "missing.pid")
    with pytest.raises(ConfigError, match="Cannot read the broker's pid"):
        HubServer(config).start()


def test_hub_serve_refuses_a_pid_file_without_a_broker_folder(hub_ws: Workspace) -> None:
    result = CliRunner().invoke(app, ["hub", "serve", "-w", str(hub_ws.root), "--embedded-broker",
                                      "--broker-pid-file", "/nonexistent.pid"])  # fmt: skip
    assert result.exit_code == 1 and "--broker-pid-file needs --broker-config-dir" in str(result.exception)
