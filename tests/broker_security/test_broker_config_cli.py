"""``edgeship hub broker-config``: the hub store's devices become a working Mosquitto configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from secure_broker import Probe, start_broker

from edgeship.hub.broker import CertificateAuthority, hash_password
from edgeship.hub.store import HubStore, sqlite_url
from edgeship.workspace import Workspace

EDGESHIP = [sys.executable, "-m", "edgeship"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGESHIP, "hub", "broker-config", *args], capture_output=True, text=True, timeout=60)


def test_broker_config_serves_the_hubs_devices_and_revokes_the_others(workspace: Workspace, tmp_path: Path) -> None:
    store = HubStore(sqlite_url(workspace.root))
    store.add_devices([("dev-a", {}), ("dev-c", {})], datetime.now(timezone.utc))
    store.close()
    (tmp_path / "hub.pw").write_text("hub-secret\n")
    (tmp_path / "devices.pw").write_text(f"dev-a:{hash_password('pw-a')}\ndev-gone:{hash_password('pw-g')}\n")
    out = tmp_path / "broker"
    results: list[subprocess.CompletedProcess[str]] = []

    def configure(ports: list[int]) -> Path:
        results[:] = [_run("-o", str(out), "--hub-password-file", str(tmp_path / "hub.pw"),
                           "--device-passwords", str(tmp_path / "devices.pw"), "--port", str(ports[0]),
                           "--tls-host", "127.0.0.1", "--tls-port", str(ports[1]), "--require-certificate",
                           *(["--run-as", "root"] if os.geteuid() == 0 else []))]  # fmt: skip
        assert results[0].returncode == 0, results[0].stderr
        return out / "mosquitto.conf"

    broker = start_broker(configure, 2)
    plain, tls = broker.ports
    result = results[0]
    assert "for 2 devices (1 by password, 1 by certificate only)" in result.stdout
    assert "Left out 1 password(s) of devices not on the hub: dev-gone." in result.stdout
    assert (workspace.root / "broker-ca" / "ca.key").stat().st_mode & 0o077 == 0

    probes: list[Probe] = []
    try:
        url = f"mqtt://127.0.0.1:{plain}"
        probes += [Probe(url, "hub", username="hub", password="hub-secret"),
                   Probe(url, "dev-a", username="dev-a", password="pw-a"),
                   Probe(url, "dev-gone", username="dev-gone", password="pw-g")]  # fmt: skip
        assert [p.connected for p in probes] == [0, 0, 135]
        ca_dir = workspace.root / "broker-ca"
        ca = CertificateAuthority.load((ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes())
        issued = ca.issue_client("dev-c")
        (tmp_path / "dev-c.crt").write_text(issued.cert_pem)
        (tmp_path / "dev-c.key").write_text(issued.key_pem)
        device_c = Probe(f"mqtts://127.0.0.1:{tls}", "dev-c", ca_file=out / "ca.pem",
                         cert_file=tmp_path / "dev-c.crt", key_file=tmp_path / "dev-c.key")  # fmt: skip
        probes.append(device_c)
        assert device_c.ok, device_c.connected
    finally:
        for probe in probes:
            probe.close()
        broker.stop()


def test_broker_config_refuses_what_cannot_work(workspace: Workspace, tmp_path: Path) -> None:
    HubStore(sqlite_url(workspace.root)).close()
    (tmp_path / "hub.pw").write_text("hub-secret\n")
    base = ["-o", str(tmp_path / "out"), "--hub-password-file", str(tmp_path / "hub.pw")]
    no_tls = _run(*base, "--require-certificate")
    assert no_tls.returncode == 1 and "--require-certificate needs TLS" in no_tls.stderr
    no_listener = _run(*base, "--no-plain")
    assert no_listener.returncode == 1 and "--no-plain leaves no listener" in no_listener.stderr
    (tmp_path / "bad.pw").write_text("dev-a:plaintext\n")
    bad = _run(*base, "--device-passwords", str(tmp_path / "bad.pw"))
    assert bad.returncode == 1 and "line 1 is not 'username:$7$...'" in bad.stderr
    missing = _run("-o", str(tmp_path / "out"), "--hub-password-file", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "Cannot read the hub password file" in missing.stderr


def test_broker_config_takes_hashes_from_the_store_and_a_file_overrides_them(
    workspace: Workspace, tmp_path: Path
) -> None:
    from edgeship.hub.broker import parse_password_file, verify_password
    from edgeship.hub.store import CredentialStore

    now = datetime.now(timezone.utc)
    store = HubStore(sqlite_url(workspace.root))
    store.add_devices([("dev-a", {}), ("dev-b", {}), ("dev-c", {})], now)
    credentials = CredentialStore(store)
    credentials.issue("dev-a", "password", now, password_hash=hash_password("stored-a"))
    credentials.issue("dev-b", "password", now, password_hash=hash_password("stored-b"))
    credentials.issue("dev-c", "certificate", now, serial=1234, fingerprint="ab" * 32)
    credentials.issue("dev-c", "certificate", now, serial=5678, fingerprint="cd" * 32, replace=True)
    store.close()
    (tmp_path / "hub.pw").write_text("hub-secret\n")
    (tmp_path / "devices.pw").write_text(f"dev-b:{hash_password('file-b')}\n")
    out = tmp_path / "out"
    result = _run("-o", str(out), "--hub-password-file", str(tmp_path / "hub.pw"), "--device-passwords",
                  str(tmp_path / "devices.pw"), "--tls-host", "127.0.0.1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = parse_password_file((out / "passwd").read_text())
    assert set(lines) == {"hub", "dev-a", "dev-b"}
    assert verify_password("stored-a", lines["dev-a"]) and verify_password("file-b", lines["dev-b"])
    from cryptography import x509

    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    assert [r.serial_number for r in crl] == [1234]  # the rotated-away certificate
    assert f"crlfile {(out / 'crl.pem').resolve()}" in (out / "mosquitto.conf").read_text()
