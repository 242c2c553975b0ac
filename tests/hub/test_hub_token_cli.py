"""``edgeship hub token create|list|revoke`` on a hub workspace, and their tokens used against a running hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hub_workspace import make_hub_workspace
from typer.testing import CliRunner, Result

from edgeship.cli import app
from edgeship.hub.server import HubConfig, HubServer
from edgeship.workspace import Workspace


@pytest.fixture
def hub_ws(tmp_path: Path) -> Workspace:
    ws, _world = make_hub_workspace(tmp_path / "hubws", modules=0)
    return ws


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("EDGESHIP_HUB_TOKEN", raising=False)
    return CliRunner()


def run(cli: CliRunner, *args: str, ok: bool = True) -> Result:
    result = cli.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def refused(cli: CliRunner, *args: str) -> str:
    result = run(cli, *args, ok=False)
    assert result.exit_code == 1, (result.output, result.exception)
    return str(result.exception)


def test_tokens_are_created_listed_and_revoked_and_the_list_never_shows_a_token(
    cli: CliRunner, hub_ws: Workspace
) -> None:
    ws = ["-w", str(hub_ws.root)]
    alice = run(cli, "hub", "token", "create", "alice", *ws).stdout.strip()
    viewer = run(cli, "hub", "token", "create", "viewer", "--role", "read-only", "--expires", "30d", *ws).stdout.strip()
    fixed = run(cli, "hub", "token", "create", "ci", "--expires", "2099-01-01T00:00:00Z", *ws).stdout.strip()
    assert all(t.startswith("esh_") for t in (alice, viewer, fixed))

    listed = run(cli, "hub", "token", "list", "--json", *ws).stdout
    for token in (alice, viewer, fixed):
        assert token not in listed
    rows = {row["name"]: row for row in json.loads(listed)}
    assert set(rows) == {"alice", "viewer", "ci"}
    assert (rows["alice"]["role"], rows["alice"]["expires"], rows["alice"]["state"]) == ("operator", None, "active")
    assert rows["viewer"]["role"] == "read-only"
    expires = datetime.fromisoformat(rows["viewer"]["expires"]) - datetime.fromisoformat(rows["viewer"]["created"])
    assert timedelta(days=30) - timedelta(minutes=1) < expires <= timedelta(days=30)
    assert rows["ci"]["expires"] == "2099-01-01T00:00:00+00:00"
    assert "digest" not in rows["alice"]

    assert "Revoked token 'alice' (operator)" in run(cli, "hub", "token", "revoke", "alice", *ws).stdout
    assert "was revoked already" in run(cli, "hub", "token", "revoke", "alice", *ws).stdout
    rows = {row["name"]: row for row in json.loads(run(cli, "hub", "token", "list", "--json", *ws).stdout)}
    assert rows["alice"]["state"] == "revoked" and rows["alice"]["revoked"] is not None
    table = run(cli, "hub", "token", "list", *ws).stdout
    assert "viewer" in table and "read-only" in table and "revoked" in table
    assert "exists already (revoked)" in refused(cli, "hub", "token", "create", "alice", *ws)


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "admin"], "Unknown --role 'admin'; use one of: operator, read-only."),
    (["--expires", "soon"], "Cannot read --expires 'soon'"),
    (["--expires", "0d"], "would expire at once"),
    (["--expires", "2020-01-01T00:00:00Z"], "is in the past"),
    (["--expires", "2099-01-01T00:00:00"], "has no time zone; add Z"),
])
def test_a_bad_role_or_expiry_is_one_sentence_and_creates_nothing(
    cli: CliRunner, hub_ws: Workspace, args: list[str], message: str
) -> None:
    ws = ["-w", str(hub_ws.root)]
    assert message in refused(cli, "hub", "token", "create", "bob", *args, *ws)
    assert json.loads(run(cli, "hub", "token", "list", "--json", *ws).stdout) == []


def test_revoking_a_name_the_hub_does_not_know_says_where_to_look(cli: CliRunner, hub_ws: Workspace) -> None:
    message = refused(cli, "hub", "token", "revoke", "nobody", "-w", str(hub_ws.root))
    assert message == "No token named 'nobody' on this hub; 'edgeship hub token list' shows the names."


@pytest.fixture
def hub(hub_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer(HubConfig(workspace=hub_ws.root, embedded_broker=True, broker_port=0, port=0)) as server:
        monkeypatch.setenv("EDGESHIP_HUB_URL", server.api_url)
        yield server


def test_a_running_hub_enforces_the_role_and_revocation_of_cli_made_tokens(
    cli: CliRunner, hub_ws: Workspace, hub: HubServer
) -> None:
    ws = ["-w", str(hub_ws.root)]
    ops = run(cli, "hub", "token", "create", "ops", *ws).stdout.strip()
    viewer = run(cli, "hub", "token", "create", "viewer", "--role", "read-only", *ws).stdout.strip()
    run(cli, "device", "create", "dev-1", "--tag", "site=lab", "--token", ops)

    assert "dev-1" in run(cli, "device", "list", "--token", viewer).stdout
    message = refused(cli, "device", "tag", "dev-1", "--tag", "site=home", "--token", viewer)
    assert "The token 'viewer' has the 'read-only' role" in message and "PUT /devices/{device_id}/tags" in message
    assert json.loads(run(cli, "device", "show", "dev-1", "--json", "--token", ops).stdout)["tags"] == {"site": "lab"}

    run(cli, "hub", "token", "revoke", "viewer", *ws)
    assert "The operator token 'viewer' was revoked at" in refused(cli, "device", "list", "--token", viewer)
    assert "dev-1" in run(cli, "device", "list", "--token", ops).stdout
