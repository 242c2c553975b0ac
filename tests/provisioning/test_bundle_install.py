"""The provisioning bundle's checks and its all-or-nothing installation on the device."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgeship.agent.config import load_config
from edgeship.errors import BundleError
from edgeship.provisioning import BUNDLE_FILES, MAX_BUNDLE, ProvisioningBundle, install_bundle
from edgeship.signing import load_trust_root

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"


def _bundle(trust_root_json: str, **over: object) -> ProvisioningBundle:
    fields: dict[str, object] = {
        "device_id": "dev-7",
        "broker_url": "mqtts://broker.example:8883",
        "username": "dev-7",
        "password": "s3cret \"quoted\" \\ pass",
        "ca_cert_pem": CA,
        "client_cert_pem": CA,
        "client_key_pem": KEY,
        "hub_url": "http://hub.example:8000",
        "trust_root": trust_root_json,
    }
    fields.update(over)
    return ProvisioningBundle.build(**fields)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_written_files_are_what_was_sent_and_the_agent_loads_them(tmp_path: Path, trust_root_json: str) -> None:
    bundle = ProvisioningBundle.from_bytes(_bundle(trust_root_json).to_bytes())
    installed = install_bundle(bundle, tmp_path / "etc" / "agent.toml", data_dir="/var/lib/edgeship")
    folder = tmp_path / "etc"
    assert installed.files[-1] == folder / "agent.toml"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*BUNDLE_FILES.values(), "agent.toml"])
    assert (folder / "broker-password").read_text() == bundle.password
    assert _mode(folder / "broker-password") == 0o600
    assert _mode(folder / "client.key") == 0o600 and (folder / "client.key").read_text() == KEY
    assert _mode(folder / "agent.toml") == 0o644 and _mode(folder / "trust-root.json") == 0o644
    assert load_trust_root((folder / "trust-root.json").read_bytes()).version == 1
    assert "s3cret" not in (folder / "agent.toml").read_text()

    config = load_config(folder / "agent.toml")
    assert config.device_id == "dev-7" and config.hub_url == "http://hub.example:8000"
    assert config.broker.password == bundle.password and config.broker.username == "dev-7"
    assert config.broker.ca_file == folder / "hub-ca.pem" and config.broker.key_file == folder / "client.key"
    assert config.trust_root == folder / "trust-root.json" and config.data_dir == Path("/var/lib/edgeship")
    assert config.runtime == "process"


def test_a_password_only_bundle_writes_no_certificate_files(tmp_path: Path, trust_root_json: str) -> None:
    bundle = _bundle(trust_root_json, broker_url="mqtt://127.0.0.1:1883", ca_cert_pem=None, client_cert_pem=None,
                     client_key_pem=None)  # fmt: skip
    install_bundle(bundle, tmp_path / "agent.toml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml", "broker-password", "trust-root.json"]
    assert load_config(tmp_path / "agent.toml").broker_settings.url == "mqtt://127.0.0.1:1883"


def test_reprovisioning_replaces_the_files_whole(tmp_path: Path, trust_root_json: str) -> None:
    install_bundle(_bundle(trust_root_json), tmp_path / "agent.toml")
    install_bundle(_bundle(trust_root_json, device_id="dev-8", password="other"), tmp_path / "agent.toml")
    assert load_config(tmp_path / "agent.toml").device_id == "dev-8"
    assert (tmp_path / "broker-password").read_text() == "other"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    install_bundle(_bundle(trust_root_json, username=None, password=None), tmp_path / "agent.toml")
    assert not (tmp_path / "broker-password").exists()  # no stale secret outlives the config naming it


def test_a_target_that_is_a_folder_fails_before_anything_is_written(tmp_path: Path, trust_root_json: str) -> None:
    (tmp_path / "client.key").mkdir()
    with pytest.raises(BundleError, match=r"client\.key is a folder; move it away"):
        install_bundle(_bundle(trust_root_json), tmp_path / "agent.toml")
    assert [p.name for p in tmp_path.iterdir()] == ["client.key"]


def test_a_config_the_agent_would_refuse_is_not_installed(tmp_path: Path, trust_root_json: str) -> None:
    with pytest.raises(BundleError, match="The agent would refuse"):
        install_bundle(_bundle(trust_root_json), tmp_path / "agent.toml", data_dir="")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device_id", "a/b", "device_id: Device id 'a/b' cannot be part of an MQTT topic"),
        ("broker_url", "mqtt://u:p@host:1883", "broker_url: must not carry credentials"),
        ("broker_url", "http://host", "broker_url: Broker URL scheme 'http' is not supported"),
        ("hub_url", "hub:8000", "hub_url: must be an http:// or https:// URL"),
        ("trust_root", "{}", "trust_root: Envelope"),
        ("client_key_pem", None, "give both a client certificate and its key"),
        ("ca_cert_pem", "not pem", "ca_cert_pem: must be PEM text"),
    ],
)
def test_an_invalid_bundle_is_refused_with_the_field_named(
    trust_root_json: str, field: str, value: object, message: str
) -> None:
    with pytest.raises(BundleError, match="Provisioning bundle is invalid: " + message.replace("(", r"\(")):
        _bundle(trust_root_json, **{field: value})


def test_certificates_need_an_mqtts_broker(trust_root_json: str) -> None:
    with pytest.raises(BundleError, match="certificates need TLS"):
        _bundle(trust_root_json, broker_url="mqtt://host:1883")


def test_an_oversized_bundle_is_refused_when_encoded(trust_root_json: str) -> None:
    bundle = _bundle(trust_root_json, ca_cert_pem=CA + "A" * MAX_BUNDLE)
    with pytest.raises(BundleError, match="over the limit"):
        bundle.to_bytes()


def test_received_bytes_that_are_not_a_bundle_are_refused() -> None:
    with pytest.raises(BundleError, match="not JSON"):
        ProvisioningBundle.from_bytes(b"\xff\x00")
    with pytest.raises(BundleError, match="schemaVersion"):
        ProvisioningBundle.from_bytes(b'{"schemaVersion": 2}')
