"""A real Mosquitto on the generated security config: a password listener and a certificate TLS listener."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from broker_fleet import PASSWORDS, Fleet
from secure_broker import start_broker

from edgeship.hub.broker import (
    BrokerUser,
    CertificateAuthority,
    MosquittoSettings,
    TlsListener,
    hash_password,
    write_broker_config,
)


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    ca = CertificateAuthority.create()
    server = ca.issue_server(["127.0.0.1", "localhost"])
    certs: dict[str, tuple[Path, Path]] = {}
    for device in ("dev-a", "dev-c"):
        issued = ca.issue_client(device)
        certs[device] = (_write(tmp_path / f"{device}.crt", issued.cert_pem),
                         _write(tmp_path / f"{device}.key", issued.key_pem, 0o600))  # fmt: skip
    stranger = CertificateAuthority.create("another CA").issue_client("dev-a")
    certs["stranger"] = (_write(tmp_path / "stranger.crt", stranger.cert_pem),
                         _write(tmp_path / "stranger.key", stranger.key_pem, 0o600))  # fmt: skip
    ca_file = _write(tmp_path / "hub-ca.pem", ca.cert_pem)
    cert_file = _write(tmp_path / "server.crt", server.cert_pem)
    key_file = _write(tmp_path / "server.key", server.key_pem, 0o600)
    folder = tmp_path / "broker"
    users = [BrokerUser(name, hash_password(pw)) for name, pw in PASSWORDS.items()] + [BrokerUser("dev-c")]
    chosen: list[MosquittoSettings] = []

    def configure(ports: list[int]) -> Path:
        settings = MosquittoSettings(
            port=ports[0],
            tls=TlsListener(ca_file=ca_file, cert_file=cert_file, key_file=key_file, port=ports[1],
                            bind="127.0.0.1", require_certificate=True),
            run_as="root" if os.geteuid() == 0 else None,  # as root Mosquitto would drop to 'mosquitto'
        )  # fmt: skip
        chosen[:] = [settings]
        return write_broker_config(folder, users, settings).config

    broker = start_broker(configure, 2)
    settings = chosen[0]
    assert settings.tls is not None
    try:
        yield Fleet(broker, folder, settings, f"mqtt://127.0.0.1:{settings.port}",
                    f"mqtts://127.0.0.1:{settings.tls.port}", ca_file, certs)  # fmt: skip
    finally:
        broker.stop()
