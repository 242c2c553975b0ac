"""Device credentials the hub owns, against a real Mosquitto the hub reloads and a real hub (uvicorn, bridge).

The broker runs on the folder ``edgeship hub broker-config`` wrote; the hub serves
with ``broker_config_dir`` and the broker's pid file, so every ``device create``,
``rotate-credentials`` and ``delete`` rewrites the password file (and CRL) and sends
SIGHUP. Devices then log in with exactly what the CLI handed over once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from secure_broker import Probe, SecureBroker, start_broker
from typer.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parent.parent / "hub"))

from hub_workspace import make_hub_workspace

from edgeship.agent.decide import accept_document
from edgeship.cli import app
from edgeship.hub.api import create_token
from edgeship.hub.broker import verify_password
from edgeship.hub.server import HubConfig, HubServer, load_hub_keys
from edgeship.hub.store import CredentialStore
from edgeship.mqtt import device_topic
from edgeship.workspace import Workspace

NOT_AUTHORIZED = 135


@dataclass
class ManagedHub:
    hub: HubServer
    broker: SecureBroker
    workspace: Workspace
    folder: Path
    plain_url: str
    tls_url: str
    cli: CliRunner


@pytest.fixture
def managed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ManagedHub]:
    ws, _world = make_hub_workspace(tmp_path / "hubws")
    (tmp_path / "hub.pw").write_text("hub-secret\n")
    folder = tmp_path / "broker"

    def configure(ports: list[int]) -> Path:
        result = subprocess.run(
            [sys.executable, "-m", "edgeship", "hub", "broker-config", "-o", str(folder), "-w", str(ws.root),
             "--hub-password-file", str(tmp_path / "hub.pw"), "--hub-username", "hub", "--hub-username", "hub-probe",
             "--port", str(ports[0]), "--tls-host", "127.0.0.1",
             "--tls-port", str(ports[1]), "--require-certificate",
             *(["--run-as", "root"] if os.geteuid() == 0 else [])],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return folder / "mosquitto.conf"

    broker = start_broker(configure, 2)
    assert broker.process is not None
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{broker.process.pid}\n")
    plain, tls = broker.ports
    config = HubConfig(workspace=ws.root, broker_url=f"mqtt://127.0.0.1:{plain}", broker_username="hub",
                       broker_password="hub-secret", port=0, broker_config_dir=folder, broker_pid_file=pid_file)
    try:
        with HubServer(config) as hub:
            monkeypatch.setenv("EDGESHIP_HUB_URL", hub.api_url)
            monkeypatch.setenv("EDGESHIP_HUB_TOKEN", create_token(hub.store, "tests"))
            yield ManagedHub(hub, broker, ws, folder, f"mqtt://127.0.0.1:{plain}", f"mqtts://127.0.0.1:{tls}",
                             CliRunner())  # fmt: skip
    finally:
        broker.stop()


def run(managed: ManagedHub, *args: str) -> Result:
    result = managed.cli.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def login(url: str, device_id: str, *, expect: int = 0, timeout: float = 10.0, **creds: object) -> Probe:
    """Connect until the broker answers ``expect`` (a SIGHUP reload is asynchronous); the last probe."""
    deadline = time.monotonic() + timeout
    while True:
        probe = Probe(url, device_id, **creds)  # type: ignore[arg-type]
        if probe.connected == expect or time.monotonic() > deadline:
            return probe
        probe.close()
        time.sleep(0.1)


def desired_document(probe: Probe, managed: ManagedHub, device_id: str) -> None:
    assert probe.subscribe(device_topic(device_id, "desired")) == [1]
    message = probe.next_message(timeout=5)
    assert message is not None and message[0] == device_topic(device_id, "desired")
    trust_root, _signer = load_hub_keys(managed.workspace)
    accepted = accept_document(message[1], trust_root, device_id, None, datetime.now(timezone.utc))
    assert accepted is not None


def test_a_password_device_logs_in_once_created_and_is_refused_after_rotation_and_delete(
    managed: ManagedHub, tmp_path: Path
) -> None:
    pw_file = tmp_path / "dev-1.pw"
    out = run(managed, "device", "create", "dev-1", "--tag", "site=lab", "--credentials-out", str(pw_file)).stdout
    assert "written to" in out and pw_file.stat().st_mode & 0o077 == 0
    first = pw_file.read_text().strip()
    assert len(first) >= 22 and first not in out

    device = login(managed.plain_url, "dev-1", username="dev-1", password=first)
    try:
        assert device.ok, device.connected
        desired_document(device, managed, "dev-1")
    finally:
        device.close()

    db = (managed.workspace.root / "hub.db").read_bytes() + (managed.workspace.root / "hub.db-wal").read_bytes()
    assert first.encode() not in db  # the hub keeps only the $7$ hash
    row = CredentialStore(managed.hub.store).active()["dev-1"]
    assert row.password_hash is not None and row.password_hash.startswith("$7$")
    assert verify_password(first, row.password_hash)
    assert first not in json.dumps(run(managed, "device", "show", "dev-1", "--json").stdout)

    live = login(managed.plain_url, "dev-1-live", username="dev-1", password=first)
    rotated = json.loads(run(managed, "device", "rotate-credentials", "dev-1", "--json").stdout)
    assert rotated["broker"] == "reloaded"
    deadline = time.monotonic() + 10
    while live.client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    dropped = not live.client.is_connected()
    live.close()
    assert live.ok and dropped  # Mosquitto 2 drops a live session whose password no longer checks out
    second = rotated["credentials"]["password"]
    old = login(managed.plain_url, "dev-1", username="dev-1", password=first, expect=NOT_AUTHORIZED)
    new = login(managed.plain_url, "dev-1b", username="dev-1", password=second)
    try:
        assert old.connected == NOT_AUTHORIZED and new.ok, (old.connected, new.connected)
        desired_document(new, managed, "dev-1")
    finally:
        old.close()
        new.close()

    assert "Deleted device dev-1" in run(managed, "device", "delete", "dev-1", "--yes").stdout
    gone = login(managed.plain_url, "dev-1", username="dev-1", password=second, expect=NOT_AUTHORIZED)
    gone.close()
    assert gone.connected == NOT_AUTHORIZED
    # A second hub identity: its line survives the running hub's rewrites, and it does not take the hub's session.
    hub = login(managed.plain_url, "probe-hub", username="hub-probe", password="hub-secret")
    try:
        assert hub.ok
        assert hub.subscribe(device_topic("dev-1", "desired")) == [1]
        assert hub.next_message(timeout=1.0) is None  # the retained document was cleared
    finally:
        hub.close()
    assert managed.hub.bridge.connections == 1  # the hub's own session was never taken over
    assert [r.revoked for r in CredentialStore(managed.hub.store).history("dev-1")] == [True, True]


def test_a_certificate_device_logs_in_over_tls_with_the_certificate_the_hub_issued(
    managed: ManagedHub, tmp_path: Path
) -> None:
    key_file = tmp_path / "dev-c.pem"
    run(managed, "device", "create", "dev-c", "--certificate", "--credentials-out", str(key_file))
    assert key_file.stat().st_mode & 0o077 == 0
    ca_file, cert_file = tmp_path / "dev-c.pem.ca.pem", tmp_path / "dev-c.pem.crt"
    assert "PRIVATE KEY" not in cert_file.read_text() and "CERTIFICATE" not in key_file.read_text()
    device = login(managed.tls_url, "dev-c", ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    try:
        assert device.ok, device.connected
        desired_document(device, managed, "dev-c")
    finally:
        device.close()
    record = CredentialStore(managed.hub.store).active()["dev-c"]
    assert record.kind == "certificate" and record.password_hash is None and record.fingerprint

    run(managed, "device", "delete", "dev-c", "--yes")  # its serial joins crl.pem; Mosquitto reloads it on SIGHUP
    deadline = time.monotonic() + 10
    while True:
        revoked = Probe(managed.tls_url, "dev-c", ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        revoked.close()
        if not revoked.ok or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not revoked.ok, "a deleted device's certificate still logs in"
    assert CredentialStore(managed.hub.store).revoked_serials() == [record.serial]
