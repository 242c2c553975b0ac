"""Trust-root rotation from the hub to real agents: ``edgeship hub trust-root publish`` end to end.

A real ``HubServer`` (SQLite, MQTT bridge, REST API) on a real Mosquitto and
``edgeship agent run`` processes provisioned with the first trust root. The
operator writes version 2 (a new hub key) with ``edgeship keys trust-root
--previous`` and publishes it through the CLI; the hub sends the chain, then
re-signs every document with the new key, and the devices follow. Documents carry
no modules, so nothing is installed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "agent"), str(TESTS / "hub")]

from agent_world import AgentProcess, AgentWorld, BlobServer, Observer  # noqa: E402
from hub_workspace import make_hub_workspace  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from edgeship.agent.decide.accept import MAX_SEQUENCE_JUMP  # noqa: E402
from edgeship.cli import app  # noqa: E402
from edgeship.hub.api import create_token  # noqa: E402
from edgeship.hub.server import HubConfig, HubServer  # noqa: E402
from edgeship.signing import Keyring  # noqa: E402
from edgeship.workspace import Workspace  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.mosquitto]
WAIT = 60.0


def _wait(what: str, check: Callable[[], bool], agents: list[AgentProcess]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; agent logs: {[a.log()[-2000:] for a in agents]}")


@pytest.fixture
def setup(tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Workspace, AgentWorld]]:
    ws, hub_world = make_hub_workspace(tmp_path / "hubws", modules=0)
    blobs = BlobServer(tmp_path / "served")
    world = AgentWorld(tmp_path / "world", tmp_path / "no-wheelhouse", blobs, release=hub_world.release,
                       hub_key=hub_world.hub_key, root_key=hub_world.root_key)
    world.root.mkdir(parents=True)
    (world.root / "trust-root.json").write_bytes((ws.root / "trust-root.json").read_bytes())  # provisioned: v1
    monkeypatch.setenv("COLUMNS", "200")
    yield ws, world
    blobs.close()


def _reported(hub: HubServer, device_id: str) -> dict[str, Any]:
    view = hub.services.fleet.get_device(device_id)
    return dict(view.reported.state) if view.reported else {}


def test_the_hub_rotates_its_hub_key_and_every_device_follows(
    setup: tuple[Workspace, AgentWorld], mosquitto: Any, tmp_path: Path
) -> None:
    ws, world = setup
    cli = CliRunner()
    agents: list[AgentProcess] = []
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        token = create_token(hub.store, "tests")
        remote = ["--hub", hub.api_url, "--token", token]
        try:
            first = AgentProcess(world, "dev-1", mosquitto.url, tmp_path / "dev-1").start()
            agents.append(first)
            hub.services.fleet.create_device("dev-1")
            _wait("dev-1 applies document 1", lambda: _reported(hub, "dev-1").get("lastAppliedSequence") == 1, agents)
            assert _reported(hub, "dev-1")["trustRootVersion"] == 1

            Keyring(ws).create("hub", name="hub-2")
            v2 = tmp_path / "trust-root-v2.json"
            made = cli.invoke(app, ["keys", "trust-root", "-w", str(ws.root), "-o", str(v2), "--previous",
                                    str(ws.root / "trust-root.json"), "--release", "release", "--hub", "hub-2"])
            assert made.exit_code == 0, made.output
            jump = tmp_path / "trust-root-v3.json"
            made = cli.invoke(app, ["keys", "trust-root", "-w", str(ws.root), "-o", str(jump), "--previous", str(v2),
                                    "--release", "release", "--hub", "hub-2"])
            assert made.exit_code == 0, made.output
            refused = cli.invoke(app, ["hub", "trust-root", "publish", str(jump), *remote])
            assert refused.exit_code == 1 and "current one is 1" in str(refused.exception)

            published = cli.invoke(app, ["hub", "trust-root", "publish", str(v2), *remote])
            assert published.exit_code == 0, published.output
            assert "version 2" in published.output
            hub2 = Keyring(ws).signer("hub-2").keyid
            assert [s.keyid for s in hub.services.trust.signers] == [hub2]
            _wait("dev-1 rotates and applies the re-signed document",
                  lambda: _reported(hub, "dev-1").get("trustRootVersion") == 2
                  and _reported(hub, "dev-1").get("lastAppliedSequence") == 2
                  and _reported(hub, "dev-1")["status"]["code"] == 200, agents)

            # A device created after the rotation, still provisioned with version 1, gets the chain first.
            second = AgentProcess(world, "dev-2", mosquitto.url, tmp_path / "dev-2").start()
            agents.append(second)
            hub.services.fleet.create_device("dev-2")
            _wait("dev-2 rotates and applies its first document",
                  lambda: _reported(hub, "dev-2").get("trustRootVersion") == 2
                  and _reported(hub, "dev-2").get("lastAppliedSequence") == 1, agents)

            shown = cli.invoke(app, ["hub", "trust-root", "show", *remote])
            assert shown.exit_code == 0 and "version 2" in shown.output and "v2" in shown.output
            again = cli.invoke(app, ["hub", "trust-root", "publish", str(v2), *remote])
            assert again.exit_code == 1 and "already version 2" in str(again.exception)
        finally:
            for agent in agents:
                agent.cleanup()
    # A restarted hub loads version 2 and signs with hub-2, though --hub-key still says 'hub'.
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        assert hub.services.trust.trust_root.version == 2
        assert [s.keyid for s in hub.services.trust.signers] == [hub2]
        assert hub.services.trust.trust_root_message() is not None


def test_a_device_a_stolen_hub_key_locked_out_recovers_when_the_hub_key_is_rotated(
    setup: tuple[Workspace, AgentWorld], mosquitto: Any, tmp_path: Path
) -> None:
    """TUF's recovery from a too-high version: rotate the key that signed it.

    A stolen hub key pushes the device's sequence as far as the agent lets it (the
    largest jump), so the hub's own documents become "replays". Rotating the hub key
    voids that floor: nothing the stolen key signed verifies any more.
    """
    ws, world = setup
    cli = CliRunner()
    agents: list[AgentProcess] = []
    observer = Observer(mosquitto.port, client_id="thief")
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        token = create_token(hub.store, "tests")
        try:
            agents.append(AgentProcess(world, "dev-1", mosquitto.url, tmp_path / "dev-1").start())
            hub.services.fleet.create_device("dev-1")
            _wait("dev-1 applies document 1", lambda: _reported(hub, "dev-1").get("lastAppliedSequence") == 1, agents)

            high = 1 + MAX_SEQUENCE_JUMP
            observer.desired("dev-1", world.document("dev-1", high, []))  # signed with the stolen hub key
            _wait("dev-1 takes the stolen key's document", lambda: _reported(hub, "dev-1").get(
                "lastAppliedSequence") == high, agents)
            own = hub.services.fleet.get_device("dev-1").desired
            assert own is not None
            observer.desired("dev-1", own.envelope.encode())
            _wait("dev-1 refuses the hub's own document as a replay",
                  lambda: _reported(hub, "dev-1")["status"]["code"] == 409, agents)

            Keyring(ws).create("hub", name="hub-2")
            v2 = tmp_path / "trust-root-v2.json"
            made = cli.invoke(app, ["keys", "trust-root", "-w", str(ws.root), "-o", str(v2), "--previous",
                                    str(ws.root / "trust-root.json"), "--release", "release", "--hub", "hub-2"])
            assert made.exit_code == 0, made.output
            published = cli.invoke(app, ["hub", "trust-root", "publish", str(v2), "--hub", hub.api_url,
                                         "--token", token])
            assert published.exit_code == 0, published.output
            _wait("dev-1 accepts the re-signed document under the new hub key",
                  lambda: _reported(hub, "dev-1").get("trustRootVersion") == 2
                  and _reported(hub, "dev-1").get("lastAppliedSequence") == 2
                  and _reported(hub, "dev-1")["status"]["code"] == 200, agents)

            observer.desired("dev-1", world.document("dev-1", high + 1, []))  # the stolen key is no longer trusted
            _wait("dev-1 refuses the retired key", lambda: _reported(hub, "dev-1")["status"]["code"] == 401, agents)
            assert _reported(hub, "dev-1")["lastAppliedSequence"] == 2
        finally:
            observer.close()
            for agent in agents:
                agent.cleanup()
