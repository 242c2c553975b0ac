"""Device credentials in the hub store and service: issued once, kept as hashes, rotated, revoked on delete."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import bcrypt
import pytest
from alembic import command
from hub_world import HubWorld
from sqlalchemy import create_engine, inspect, select, text

from edgeship.cli.broker_config_nats import DeviceHashes
from edgeship.errors import InputError
from edgeship.hub.broker import CertificateAuthority, hash_password, parse_password_file, verify_password
from edgeship.hub.broker.nats import BCRYPT_COST
from edgeship.hub.broker.reload import ManagedBroker
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.errors import AlreadyExistsError, HubNotFoundError
from edgeship.hub.store import HubStore, schema
from edgeship.hub.store.credentials import CredentialRow


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path / "world")


def test_a_password_is_returned_once_and_stored_only_as_hashes(world: HubWorld, hub_url: str) -> None:
    service = world.services(hub_url)
    creds = DeviceCredentials(service.fleet)
    view, issued = creds.create_device("dev-1", {"site": "lab"})
    assert view.device.id == "dev-1" and view.desired is not None
    assert issued.kind == "password" and issued.password is not None and len(issued.password) >= 22  # >= 128 bits
    assert issued.to_json() == {"kind": "password", "username": "dev-1", "password": issued.password}
    assert issued.password not in repr(issued)
    with service.store._tx() as s:
        rows = list(s.scalars(select(CredentialRow)))
    assert len(rows) == 1 and rows[0].password_hash is not None
    assert issued.password not in repr(rows[0].__dict__)
    assert rows[0].password_hash.startswith("$7$") and verify_password(issued.password, rows[0].password_hash)
    assert rows[0].bcrypt_hash is not None and rows[0].bcrypt_hash.startswith(f"$2b${BCRYPT_COST:02d}$")  # for NATS
    assert bcrypt.checkpw(issued.password.encode(), rows[0].bcrypt_hash.encode())
    assert not bcrypt.checkpw(b"x" + issued.password.encode(), rows[0].bcrypt_hash.encode())
    assert issued.password not in repr(creds.active("dev-1"))
    with pytest.raises(AlreadyExistsError, match="rotate them instead"):
        creds.create_credentials("dev-1")


def test_rotation_revokes_the_old_secret_and_delete_revokes_all(world: HubWorld, hub_url: str) -> None:
    service = world.services(hub_url)
    creds = DeviceCredentials(service.fleet)
    _view, first = creds.create_device("dev-1")
    second = creds.rotate_credentials("dev-1")
    assert first.password != second.password
    hashes = creds.password_hashes()
    assert verify_password(second.password or "", hashes["dev-1"])
    assert not verify_password(first.password or "", hashes["dev-1"])
    assert [r.revoked for r in creds.store.history("dev-1")] == [True, False]
    current = (creds.active("dev-1") or pytest.fail("no active credential")).bcrypt_hash or ""
    assert bcrypt.checkpw((second.password or "").encode(), current.encode())
    assert not bcrypt.checkpw((first.password or "").encode(), current.encode())
    creds.delete_device("dev-1")
    with pytest.raises(HubNotFoundError):
        service.fleet.get_device("dev-1")
    assert [r.revoked for r in creds.store.history("dev-1")] == [True, True]  # kept for audit
    assert creds.password_hashes() == {} and service.store.latest_desired() == {}
    with pytest.raises(HubNotFoundError):
        creds.rotate_credentials("dev-1")
    with pytest.raises(HubNotFoundError):
        creds.delete_device("dev-1")


def test_a_certificate_device_gets_a_hub_ca_certificate_and_its_revoked_serial_lands_in_the_crl(
    world: HubWorld, tmp_path: Path
) -> None:
    service = world.services(f"sqlite:///{tmp_path / 'hub.db'}")
    ca = CertificateAuthority.create()
    with pytest.raises(InputError, match="no CA"):
        DeviceCredentials(service.fleet).create_device("dev-x", kind="certificate")
    assert service.store.list_devices() == []  # refused before the device was made
    creds = DeviceCredentials(service.fleet, ca=lambda: ca)
    _view, issued = creds.create_device("dev-c", kind="certificate")
    assert issued.cert_pem and issued.key_pem and issued.ca_pem == ca.cert_pem
    body = issued.to_json()
    assert body["username"] == "dev-c" and body["privateKey"] == issued.key_pem
    assert creds.store.active()["dev-c"].serial == issued.serial
    assert creds.store.active()["dev-c"].bcrypt_hash is None
    rotated = creds.rotate_credentials("dev-c")
    assert rotated.kind == "certificate" and creds.store.revoked_serials() == [issued.serial]
    with pytest.raises(InputError, match="unknown"):
        creds.create_device("dev-y", kind="token")


def test_a_managed_broker_folder_gets_the_stores_hashes_and_keeps_the_hub_line(
    world: HubWorld, tmp_path: Path
) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    service = world.services(f"sqlite:///{tmp_path / 'hub.db'}")
    with pytest.raises(Exception, match="no password line for the hub user"):
        ManagedBroker(folder)
    broker = ManagedBroker(folder, hub_password="hub-secret")
    creds = DeviceCredentials(service.fleet, broker=broker)
    _v, issued = creds.create_device("dev-1")
    assert issued.broker == "written"
    passwd = folder / "passwd"
    assert passwd.stat().st_mode & 0o077 == 0
    lines = parse_password_file(passwd.read_text())
    assert set(lines) == {"hub", "dev-1"} and verify_password(issued.password or "", lines["dev-1"])
    hub_line = lines["hub"]
    again = DeviceCredentials(service.fleet, broker=ManagedBroker(folder))  # a restarted hub keeps the hub line
    again.delete_device("dev-1")
    assert parse_password_file(passwd.read_text()) == {"hub": hub_line}
    assert "pattern read edgeship/v1/devices/%u/desired" in (folder / "acl").read_text()
    failing = DeviceCredentials(service.fleet, broker=ManagedBroker(folder, pid_file=tmp_path / "none.pid"))
    _v, issued = failing.create_device("dev-2")
    assert issued.broker.startswith("failed: Cannot read the broker's pid")
    assert "dev-2" in parse_password_file(passwd.read_text())  # written anyway; a later reload takes it


def test_concurrent_changes_leave_the_newest_state_in_the_managed_folder(world: HubWorld, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path / "broker"
    folder.mkdir()
    service = world.services(f"sqlite:///{tmp_path / 'hub.db'}")
    creds = DeviceCredentials(service.fleet, broker=ManagedBroker(folder, hub_password="hub-secret"))
    with ThreadPoolExecutor(8) as pool:
        issued = list(pool.map(lambda i: creds.create_device(f"dev-{i}")[1], range(24)))
    lines = parse_password_file((folder / "passwd").read_text())
    assert set(lines) == {"hub"} | {f"dev-{i}" for i in range(24)}
    assert all(verify_password(i.password or "", lines[i.device_id]) for i in issued)


def test_the_bcrypt_column_goes_down_to_0007_and_up_again_and_old_passwords_wait_for_a_rotation(
    world: HubWorld, hub_url: str
) -> None:
    """Revision 0008 on SQLite and PostgreSQL: down keeps every credential row, up gives the old rows NULL."""
    service = world.services(hub_url)
    DeviceCredentials(service.fleet).create_device("dev-1")
    now = datetime.now(timezone.utc)
    service.store.add_devices([("dev-2", {})], now)
    service.store.close()
    engine = create_engine(hub_url)
    try:
        with engine.begin() as conn:
            command.downgrade(schema.alembic_config(conn), "0007")
        with engine.connect() as conn:
            assert "bcrypt_hash" not in [c["name"] for c in inspect(conn).get_columns("credentials")]
            assert schema.current_revision(conn) == "0007"
        with engine.begin() as conn:  # what a hub of revision 0007 stores: the $7$ hash alone
            conn.execute(text("INSERT INTO credentials (device_id, kind, password_hash, created, revoked) "
                              "VALUES ('dev-2', 'password', :hash, :created, :revoked)"),
                         {"hash": hash_password("pw-2"), "revoked": False,
                          "created": now.replace(tzinfo=None) if hub_url.startswith("sqlite") else now})  # fmt: skip
    finally:
        engine.dispose()
    service = world.services(hub_url)  # opening the store upgrades it again
    try:
        assert service.store.upgraded_from == "0007"
        creds = DeviceCredentials(service.fleet)
        active = creds.store.active()
        assert set(active) == {"dev-1", "dev-2"} and all(r.bcrypt_hash is None for r in active.values())
        assert verify_password("pw-2", active["dev-2"].password_hash or "")  # Mosquitto logins keep working
        hashes = DeviceHashes.from_store(active, {"dev-2": "$2b$06$supplied"})
        assert hashes.issued_before == {"dev-1", "dev-2"} and hashes.get("dev-1") is None
        assert hashes.get("dev-2") == "$2b$06$supplied"  # the operator's file stands in until the rotation
        rotated = creds.rotate_credentials("dev-1")
        hashes = DeviceHashes.from_store(creds.store.active(), {})
        assert hashes.issued_before == {"dev-2"}
        assert bcrypt.checkpw((rotated.password or "").encode(), (hashes.get("dev-1") or "").encode())
    finally:
        service.store.close()
    HubStore(hub_url).close()


def test_the_credential_modules_public_surface_resolves() -> None:
    import importlib

    for name in ("edgeship.hub.credentials", "edgeship.hub.store.credentials", "edgeship.hub.broker.reload",
                 "edgeship.hub.broker.ca", "edgeship.hub.broker.mosquitto"):  # fmt: skip
        module = importlib.import_module(name)
        assert all(hasattr(module, member) for member in module.__all__), name
