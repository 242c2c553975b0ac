"""The generated files as text (pure) and the hub CA's certificates, checked with ``cryptography``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeship.errors import ConfigError, InputError
from edgeship.hub.broker import (
    BrokerUser,
    CertificateAuthority,
    MosquittoSettings,
    TlsListener,
    hash_password,
    verify_password,
    write_broker_config,
)
from edgeship.hub.broker.mosquitto import render_acl, render_mosquitto_conf, render_password_file


def test_the_acl_gives_each_device_only_its_own_channels_and_the_hub_the_tree() -> None:
    acl = render_acl("hub").splitlines()
    patterns = [line for line in acl if line.startswith("pattern")]
    assert patterns == [
        "pattern read edgeship/v1/devices/%u/desired",
        "pattern read edgeship/v1/devices/%u/trust-root",
        "pattern read edgeship/v1/devices/%u/commands/#",
        "pattern read edgeship/v1/devices/%u/telemetry-stored",
        "pattern write edgeship/v1/devices/%u/reported",
        "pattern write edgeship/v1/devices/%u/telemetry",
        "pattern write edgeship/v1/devices/%u/online",
        "pattern write edgeship/v1/devices/%u/responses/#",
    ]
    assert acl[acl.index("user hub") + 1] == "topic readwrite edgeship/v1/devices/#"


def test_the_acl_gives_the_hub_rights_to_each_hub_identity_and_to_no_other_name() -> None:
    acl = render_acl(["hub-b", "hub", "hub-a"]).splitlines()
    assert [line for line in acl if line.startswith("user ")] == ["user hub", "user hub-a", "user hub-b"]
    for hub in ("hub", "hub-a", "hub-b"):
        assert acl[acl.index(f"user {hub}") + 1] == "topic readwrite edgeship/v1/devices/#"
    for name in ("cloud", "dev-a", "hubx", "a/b"):
        with pytest.raises(InputError, match="must be 'hub' or 'hub-<name>'"):
            render_acl([name])
    with pytest.raises(InputError, match="at least one hub user"):
        render_acl([])


def test_the_config_refuses_anonymous_access_and_names_the_files(tmp_path: Path) -> None:
    tls = TlsListener(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "s.crt", key_file=tmp_path / "s.key",
                      require_certificate=True, crl_file=tmp_path / "crl.pem")  # fmt: skip
    conf = render_mosquitto_conf(MosquittoSettings(tls=tls), tmp_path / "passwd", tmp_path / "acl").splitlines()
    for line in ("allow_anonymous false", f"password_file {tmp_path}/passwd", f"acl_file {tmp_path}/acl",
                 "max_queued_messages 100000", "listener 1883 127.0.0.1", "listener 8883 0.0.0.0",
                 f"cafile {tmp_path}/ca.pem", "require_certificate true", "use_identity_as_username true",
                 f"crlfile {tmp_path}/crl.pem"):  # fmt: skip
        assert line in conf
    # Mosquitto 2.0 reads use_username_as_clientid per listener (before the first one it is ignored): one
    # line in each listener's block binds every login's client id to its username.
    listeners = [i for i, line in enumerate(conf) if line.startswith("listener ")]
    assert len(listeners) == 2 and conf.count("use_username_as_clientid true") == 2
    assert all(conf[i + 1] == "use_username_as_clientid true" for i in listeners)
    with pytest.raises(ConfigError, match="needs a listener"):
        render_mosquitto_conf(MosquittoSettings(port=None), tmp_path / "p", tmp_path / "a")


def test_the_password_file_lists_password_users_only_and_refuses_duplicates() -> None:
    text = render_password_file([BrokerUser("dev-b", hash_password("b")), BrokerUser("dev-c"),
                                 BrokerUser("dev-a", hash_password("a"))])  # fmt: skip
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["dev-a", "dev-b"]
    assert verify_password("a", lines[0].split(":", 1)[1])
    with pytest.raises(InputError, match="listed twice"):
        render_password_file([BrokerUser("hub"), BrokerUser("hub")])


def test_users_that_could_escape_their_topics_are_refused() -> None:
    for name in ("a/b", "+", "#", ""):
        with pytest.raises(InputError, match="is not usable"):
            BrokerUser(name)
    with pytest.raises(InputError, match=r"\$7\$"):
        BrokerUser("dev-a", "$6$old$sha512")


def test_writing_needs_the_hub_user_and_keeps_the_password_file_private(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="lack the hub's user 'hub'"):
        write_broker_config(tmp_path, [BrokerUser("dev-a", hash_password("a"))])
    with pytest.raises(InputError, match="'hub-b' has no password; hub processes log in by password"):
        write_broker_config(tmp_path, [BrokerUser("hub", hash_password("h")), BrokerUser("hub-b")])
    with pytest.raises(InputError, match="must be 'hub' or 'hub-<name>'"):
        write_broker_config(tmp_path, [BrokerUser("cloud", "$7$x")], MosquittoSettings(hub_username="cloud"))
    files = write_broker_config(tmp_path, [BrokerUser("hub", hash_password("h")), BrokerUser("dev-a")])
    assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
    assert [line for line in files.config.read_text().splitlines() if line.startswith("listener")] == [
        "listener 1883 127.0.0.1"
    ]


def test_hashes_with_other_iterations_and_formats_verify_correctly() -> None:
    slow = hash_password("pw", iterations=1000)
    assert slow.startswith("$7$1000$") and verify_password("pw", slow) and not verify_password("px", slow)
    assert not verify_password("pw", "$6$abc$def") and not verify_password("pw", "$7$101$!!$!!")
    with pytest.raises(InputError, match="cannot be empty"):
        hash_password("")


def test_the_hub_ca_issues_a_server_and_a_device_certificate_it_verifies(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    server = x509.load_pem_x509_certificate(ca.issue_server(["broker.local", "10.0.0.5"]).cert_pem.encode())
    issued = ca.issue_client("dev-9")
    device = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    for cert in (server, device):
        cert.verify_directly_issued_by(ca.cert)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert device.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-9"
    usage = device.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert device.serial_number == issued.serial
    crl = x509.load_pem_x509_crl(ca.revocation_list([issued.serial]).encode())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None


def test_the_hub_ca_reloads_from_pem_and_refuses_a_mismatched_key() -> None:
    ca = CertificateAuthority.create()
    again = CertificateAuthority.load(ca.cert_pem, ca.key_pem)
    assert again.cert == ca.cert
    other = CertificateAuthority.create()
    with pytest.raises(InputError, match="does not belong"):
        CertificateAuthority.load(ca.cert_pem, other.key_pem)
    with pytest.raises(InputError, match="not valid PEM"):
        CertificateAuthority.load("nope", "nope")
    with pytest.raises(InputError, match="must be 1-128 letters"):
        ca.issue_client("a/b")


def test_the_hub_ca_issues_no_device_certificate_under_a_hub_name() -> None:
    ca = CertificateAuthority.create()
    for name in ("hub", "hub-2", "HUB-x", "Hub"):
        with pytest.raises(InputError, match=f"Device id '{name}' is reserved for the hub's broker identities"):
            ca.issue_client(name)
    assert ca.issue_client("hubble").cert_pem  # only 'hub' and 'hub-...' are reserved


def test_fleet_users_give_known_devices_their_hash_and_leave_out_deleted_ones() -> None:
    from edgeship.hub.broker import fleet_users, parse_password_file

    hashes = parse_password_file(f"# comment\ndev-a:{hash_password('a')}\n\ngone:{hash_password('g')}\n")
    users, dropped = fleet_users(["dev-b", "dev-a"], BrokerUser("hub", hash_password("h")), hashes)
    assert [(u.username, u.password_hash is not None) for u in users] == [
        ("hub", True), ("dev-a", True), ("dev-b", False)
    ]
    assert dropped == ["gone"]
    for reserved in (["hub"], ["dev-a", "hub-7"], ["Hub-x"]):
        with pytest.raises(InputError, match=r"reserved for the hub's broker identities .* delete them"):
            fleet_users(reserved, BrokerUser("hub"), {})
    with pytest.raises(InputError, match="must be 'hub' or 'hub-<name>'"):
        fleet_users(["dev-a"], BrokerUser("cloud"), {})
    users, dropped = fleet_users(["dev-a"], [BrokerUser("hub", "$7$x"), BrokerUser("hub-2", "$7$y")],
                                 {"hub-2": "$7$z", "dev-a": "$7$a"})  # fmt: skip
    assert [u.username for u in users] == ["hub", "hub-2", "dev-a"] and dropped == []
    with pytest.raises(InputError, match="names 'x' twice"):
        parse_password_file(f"x:{hash_password('1')}\nx:{hash_password('2')}\n")
