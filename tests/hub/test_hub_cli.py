"""``edgeship hub|device|deployment`` against a real HubServer (uvicorn + bridge + Mosquitto).

The CLI runs in-process through typer's CliRunner (fast); the server is real.
``hub serve`` itself runs as a subprocess and is stopped with SIGINT (Ctrl-C) or SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_workspace import make_hub_workspace
from mqtt_probe import Probe, Received
from parts import free_port
from typer.testing import CliRunner, Result

from edgeship.agent.decide import accept_document
from edgeship.cli import app
from edgeship.errors import EdgeshipError
from edgeship.hub.api import create_token
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import device_topic, parse_device_topic, response_topic
from edgeship.workspace import Workspace


@pytest.fixture
def hub_ws(tmp_path: Path) -> Workspace:
    ws, _world = make_hub_workspace(tmp_path / "hubws", modules=2)
    return ws


@pytest.fixture
def server(hub_ws: Workspace, mosquitto: Any) -> Iterator[HubServer]:
    with HubServer(HubConfig(workspace=hub_ws.root, broker_url=mosquitto.url, port=0)) as hub:
        yield hub


@pytest.fixture
def cli(server: HubServer, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("EDGESHIP_HUB_URL", server.api_url)
    monkeypatch.setenv("EDGESHIP_HUB_TOKEN", create_token(server.store, "tests"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run(cli: CliRunner, *args: str, ok: bool = True) -> Result:
    result = cli.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def as_json(cli: CliRunner, *args: str) -> Any:
    return json.loads(run(cli, *args, "--json").stdout)


def test_operator_flow_devices_tags_modules_and_deployments(cli: CliRunner, server: HubServer,
                                                            hub_ws: Workspace) -> None:
    uploaded = as_json(cli, "hub", "module", "upload", "digits:1", "--workspace", str(hub_ws.root))
    assert uploaded["name"] == "digits" and uploaded["version"] == 1
    assert "Uploaded digits:2" in run(cli, "hub", "module", "upload", "digits", "-w", str(hub_ws.root)).stdout

    created = as_json(cli, "device", "create", "dev-1", "--tag", "site=lab", "--tag", "floor=3")
    assert created["tags"] == {"site": "lab", "floor": 3} and created["desiredSequence"] == 1
    run(cli, "device", "create", "dev-2", "--tag", "site=home")

    made = as_json(cli, "deployment", "create", "lab", "--module", "digits:1", "--target-condition",
                   "tags.site = 'lab'", "--priority", "5")
    assert made["status"]["counts"]["targeted"] == 1
    listed = run(cli, "deployment", "list").stdout
    assert "lab" in listed and "digits:1" in listed

    moved = as_json(cli, "device", "tag", "dev-2", "--tag", "site=lab", "--tag", "ring=canary")
    assert moved["tags"] == {"site": "lab", "ring": "canary"} and moved["desiredSequence"] == 2
    assert as_json(cli, "device", "tag", "dev-2", "--remove", "ring")["tags"] == {"site": "lab"}

    shown = run(cli, "deployment", "show", "lab").stdout
    assert "Targeted 2" in shown and "Applied 2" in shown and "Reporting Success 0" in shown
    assert "dev-1" in shown and "dev-2" in shown

    table = run(cli, "device", "list").stdout
    assert "dev-1" in table and '"site": "lab"' in table
    device = as_json(cli, "device", "show", "dev-1")
    assert device["desiredSequence"] == 2 and device["online"] is None

    assert "Deleted deployment lab" in run(cli, "deployment", "delete", "lab").stdout
    assert as_json(cli, "deployment", "list") == []


def test_device_documents_reach_mqtt_and_reports_show_in_the_cli(cli: CliRunner, server: HubServer,
                                                                 hub_ws: Workspace) -> None:
    from edgeship.hub.server import load_hub_keys

    run(cli, "device", "create", "dev-1")
    probe = Probe(server.broker_url)
    try:
        probe.subscribe(device_topic("dev-1", "desired"))
        trust_root, _signer = load_hub_keys(hub_ws)
        accept_document(probe.expect().payload, trust_root, "dev-1", None, datetime.now(timezone.utc))
        report = {"schemaVersion": 1, "deviceId": "dev-1", "lastAppliedSequence": 1,
                  "status": {"code": 200, "description": "ok", "message": None}, "modules": {}}
        probe.publish(device_topic("dev-1", "reported"), json.dumps(report), retain=True)
        probe.publish(device_topic("dev-1", "online"), b"1", retain=True)
        batch = {"schemaVersion": 1, "deviceId": "dev-1", "dropped": 0, "samples": [
            {"time": "2026-01-01T00:00:00Z", "seq": 4, "cpuPercent": 3.5, "memoryBytes": 2_000_000,
             "modules": {"digits": {"requests": 9, "errors": 1, "latencyMs": {"p50": 1.5, "p95": 2.5, "p99": 4.0}}}}]}
        probe.publish(device_topic("dev-1", "telemetry"), json.dumps(batch))
        deadline = time.monotonic() + 10
        while not (device := as_json(cli, "device", "show", "dev-1"))["online"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert device["reported"]["status"]["code"] == 200 and device["lastSeen"]
        while not as_json(cli, "device", "telemetry", "dev-1"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        table = run(cli, "device", "telemetry", "dev-1").stdout
        assert "digits" in table and "1.5" in table
        listed = run(cli, "device", "list").stdout
        assert "200" in listed and "yes" in listed
    finally:
        probe.close()


def test_logs_and_restart_are_direct_methods_answered_by_the_device(cli: CliRunner, server: HubServer) -> None:
    run(cli, "device", "create", "dev-1")
    run(cli, "device", "create", "dev-2")
    device = Probe(server.broker_url)

    def answer(client: Probe, message: Received) -> None:
        topic = parse_device_topic(message.topic)
        assert topic is not None
        method, request_id = topic.rest
        args = json.loads(message.payload)
        reply = ({"status": 200, "result": {"logs": "line 1\nline 2\n"[: 7 * args["tail"]]}} if method == "logs"
                 else {"status": 404, "error": f"no module {args['module']!r}"})
        client.client.publish(response_topic(topic.device_id, request_id), json.dumps(reply), qos=1)

    device.handlers.append(answer)
    device.subscribe("edgeship/v1/devices/dev-1/commands/+/+")
    try:
        assert run(cli, "device", "logs", "dev-1", "digits", "--tail", "1").stdout == "line 1\n"
        refused = run(cli, "device", "restart", "dev-1", "nope", ok=False)
        assert refused.exit_code == 1 and "refused 'restart' (404): no module 'nope'" in str(refused.exception)
        silent = run(cli, "device", "restart", "dev-2", "digits", "--timeout", "0.3", ok=False)
        assert silent.exit_code == 1 and "did not answer 'restart' within 0.3 s" in str(silent.exception)
    finally:
        device.close()


def test_bad_input_and_an_unreachable_hub_are_one_clear_sentence(cli: CliRunner, server: HubServer) -> None:
    bad_tag = run(cli, "device", "create", "dev-1", "--tag", "site", ok=False)
    assert bad_tag.exit_code == 1 and "write it as key=value" in str(bad_tag.exception)
    bad_module = run(cli, "deployment", "create", "x", "--module", "digits", "--target-condition", "*", ok=False)
    assert "write it as NAME:VERSION" in str(bad_module.exception)
    bad_condition = run(cli, "deployment", "create", "x", "--module", "digits:1", "-c", "tags.a =", ok=False)
    assert isinstance(bad_condition.exception, EdgeshipError) and "column" in str(bad_condition.exception)
    port = free_port()
    down = run(cli, "device", "list", "--hub", f"http://127.0.0.1:{port}", ok=False)
    assert f"Cannot reach the hub at http://127.0.0.1:{port}" in str(down.exception)
    no_token = run(cli, "device", "list", "--token", "esh_wrong", ok=False)
    assert "not valid" in str(no_token.exception) and "EDGESHIP_HUB_TOKEN" in str(no_token.exception)


def test_missing_keys_say_how_to_make_them(tmp_path: Path, mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "nokeys", modules=0, trust_root=False)
    with pytest.raises(EdgeshipError, match="edgeship keys trust-root --release RELEASE_KEY --hub hub"):
        HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)).start()
    with pytest.raises(EdgeshipError, match="create it with 'edgeship keys create --role hub --name signer"):
        HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0, hub_key="signer")).start()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_hub_serve_with_the_embedded_broker_prints_urls_and_stops_on_a_signal(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    ws, _world = make_hub_workspace(tmp_path / "served", modules=0)
    token = subprocess.run([sys.executable, "-m", "edgeship", "hub", "token", "create", "ops", "-w", str(ws.root)],
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert token.startswith("esh_")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeship", "hub", "serve", "-w", str(ws.root), "--embedded-broker",
         "--broker-port", "0", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/devices", headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "hub serve did not start"
                time.sleep(0.1)
        assert response.status_code == 200 and response.json() == []
    finally:
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"hub API     http://127.0.0.1:{port}" in out and "MQTT broker mqtt://127.0.0.1:" in out
    assert f"dashboard   http://127.0.0.1:{port}/ui/" in out
    assert "stopping the hub" in out
