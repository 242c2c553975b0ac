"""Hub schema migrations on SQLite and a real PostgreSQL: upgrade in place from 0.1.0, models agree, refusals.

A "0.1.0 database" is made from ``tests/data/hub-schema/0.1.0-<backend>.sql``: the DDL
that release's ``create_all`` emitted, kept as it was, so these tests upgrade what is in
the field rather than what today's baseline revision believes it was.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import Engine

from edgeship.hub.api.auth import OperatorTokens, TokenRevokedError, create_token, token_digest
from edgeship.hub.migrations import BASELINE
from edgeship.hub.store import CredentialStore, HubStore, TelemetryStore, TokenStore, schema
from edgeship.hub.store.models import Base

DUMPS = Path(__file__).resolve().parents[1] / "data" / "hub-schema"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
OLD_TOKEN = "esh_" + "a" * 43  # a token a 0.1.0 hub handed out; only its sha256 is in the database


def _engine(url: str) -> Engine:
    return create_engine(url)


def _load_release_0_1_0(url: str) -> None:
    """Make the database exactly as edgeship 0.1.0's create_all did, with one row in every table."""
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    ddl = "\n".join(line for line in (DUMPS / f"0.1.0-{backend}.sql").read_text().splitlines()
                    if not line.startswith("--"))
    engine = _engine(url)
    with engine.begin() as conn:
        for statement in ddl.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        rows = {
            "devices": [{"id": "dev-1", "tags": '{"site": "lab"}', "created": T0, "last_sequence": 1}],
            "modules": [{"name": "digits", "version": 1, "envelope": '{"payload": "x"}', "manifest_digest": "sha256:m",
                         "bundle_digest": "sha256:b", "image_digest": None, "variant": "fp32", "created": T0}],
            "deployments": [{"id": "lab", "target_condition": "tags.site = 'lab'", "priority": 10, "created": T0}],
            "deployment_modules": [{"deployment_id": "lab", "module_name": "digits", "module_version": 1,
                                    "settings": "{}"}],
            "desired": [{"device_id": "dev-1", "sequence": 1, "envelope": "{}", "fingerprint": "fp",
                         "deployments": '["lab"]', "issued": T0, "expires": T0 + timedelta(days=7)}],
            "reported": [{"device_id": "dev-1", "state": '{"lastAppliedSequence": 1}', "received": T0}],
            "tokens": [{"name": "alice", "digest": token_digest(OLD_TOKEN), "created": T0}],
            "credentials": [{"device_id": "dev-1", "kind": "password", "password_hash": "$7$x", "serial": None,
                             "fingerprint": None, "created": T0, "revoked": False, "revoked_at": None}],
            "telemetry": [{"device_id": "dev-1", "received": T0, "batch": '{"samples": []}'}],
            "presence": [{"device_id": "dev-1", "online": True, "last_seen": T0}],
        }
        for table, values in rows.items():
            columns = ", ".join(values[0])
            params = ", ".join(f":{c}" for c in values[0])
            plain = [{k: (v.replace(tzinfo=None) if isinstance(v, datetime) and backend == "sqlite" else v)
                      for k, v in row.items()} for row in values]
            conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), plain)
    engine.dispose()


def _revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return schema.current_revision(conn)
    finally:
        engine.dispose()


def test_a_database_made_by_release_0_1_0_is_upgraded_in_place_keeping_every_row(hub_url: str) -> None:
    _load_release_0_1_0(hub_url)
    assert _revision(hub_url) is None

    store = HubStore(hub_url)
    try:
        assert _revision(hub_url) == schema.head()
        assert store.get_device("dev-1").tags == {"site": "lab"}
        assert store.get_module("digits", 1).variant == "fp32"
        assert [m.name for m in store.get_deployment("lab").modules] == ["digits"]
        assert store.latest_desired(["dev-1"])["dev-1"].deployments == ("lab",)
        assert store.reported()["dev-1"].state == {"lastAppliedSequence": 1}
        assert CredentialStore(store).active(["dev-1"])["dev-1"].password_hash == "$7$x"
        assert len(TelemetryStore(store).recent("dev-1", 10)) == 1
        assert TelemetryStore(store).presence(["dev-1"])["dev-1"].online

        # the token made before roles existed is an operator token that never expires, and still works
        alice = TokenStore(store).get("alice")
        assert (alice.role, alice.expires, alice.revoked_at, alice.created) == ("operator", None, None, T0)
        tokens = OperatorTokens(store)
        assert tokens.check(OLD_TOKEN).role == "operator"
        # ... and the new columns work on the upgraded table
        create_token(store, "dashboard", role="read-only", expires=datetime.now(timezone.utc) + timedelta(days=1))
        assert TokenStore(store).get("dashboard").role == "read-only"
        TokenStore(store).revoke("alice", datetime.now(timezone.utc))
        with pytest.raises(TokenRevokedError):
            tokens.check(OLD_TOKEN)
    finally:
        store.close()


def test_the_baseline_revision_builds_exactly_the_schema_of_release_0_1_0(hub_url: str, tmp_path: Path) -> None:
    _load_release_0_1_0(hub_url)
    if hub_url.startswith("sqlite"):
        baseline_url = f"sqlite:///{tmp_path / 'baseline.db'}"
    else:
        baseline_url = hub_url.rsplit("_", 1)[0] + "_baseline"
        server = _engine(hub_url.rsplit("/", 1)[0] + "/postgres").execution_options(isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{baseline_url.rsplit("/", 1)[1]}"')
        server.dispose()
    baseline = _engine(baseline_url)
    with baseline.begin() as conn:
        command.upgrade(schema.alembic_config(conn), BASELINE)

    release = MetaData()
    old = _engine(hub_url)
    release.reflect(old)
    old.dispose()
    with baseline.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), release) == []
        assert set(release.tables) == schema.BASELINE_TABLES
    baseline.dispose()


def test_the_models_and_the_migrations_agree(hub_url: str) -> None:
    """Fails after a model change without a revision: 'python -m edgeship.hub.migrations revision ...'."""
    HubStore(hub_url).close()
    engine = _engine(hub_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    engine.dispose()


def test_four_hubs_starting_at_once_on_an_old_database_upgrade_it_once(hub_url: str) -> None:
    _load_release_0_1_0(hub_url)
    start = threading.Barrier(4)
    outcomes: list[object] = []

    def open_hub() -> None:
        start.wait()
        try:
            HubStore(hub_url).close()
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=open_hub) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["ok"] * 4
    store = HubStore(hub_url)
    try:
        assert [t.name for t in TokenStore(store).list()] == ["alice"]
        assert store.get_device("dev-1").last_sequence == 1
    finally:
        store.close()
    assert _revision(hub_url) == schema.head()


def test_a_database_upgraded_by_a_newer_edgeship_is_refused_and_left_alone(hub_url: str) -> None:
    HubStore(hub_url).close()
    engine = _engine(hub_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(schema.SchemaError, match="revision '9999', which this edgeship does not know"):
        HubStore(hub_url)
    assert _revision(hub_url) == "9999"


def test_a_database_with_only_some_of_the_hub_tables_is_refused(hub_url: str) -> None:
    engine = _engine(hub_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE devices (id VARCHAR(128) PRIMARY KEY)")
    engine.dispose()
    with pytest.raises(schema.SchemaError, match="some of the hub's tables"):
        HubStore(hub_url)
    assert _revision(hub_url) is None


def test_a_database_with_other_applications_tables_gets_the_hub_tables_beside_them(hub_url: str) -> None:
    engine = _engine(hub_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE billing (id INTEGER PRIMARY KEY)")
    engine.dispose()
    HubStore(hub_url).close()
    assert _revision(hub_url) == schema.head()


def test_token_roles_downgrade_to_the_baseline_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    _load_release_0_1_0(url)
    HubStore(url).close()
    engine = _engine(url)
    with engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), BASELINE)
    with engine.connect() as conn:
        columns = [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(tokens)")]
    engine.dispose()
    assert columns == ["name", "digest", "created"]
    store = HubStore(url)
    try:
        assert TokenStore(store).get("alice").role == "operator"
    finally:
        store.close()


def test_hub_migrate_reports_and_upgrades_an_old_database(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeship.cli import app

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    _load_release_0_1_0(url)
    cli = CliRunner()
    status = cli.invoke(app, ["hub", "migrate", "--status", "--db", url])
    assert status.exit_code == 0, status.output
    assert f"at revision none (empty, or made before migrations); this edgeship's newest is {schema.head()}" in (
        " ".join(status.stdout.split()))
    assert _revision(url) is None
    upgraded = cli.invoke(app, ["hub", "migrate", "--db", url])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from revision none to {schema.head()}" in upgraded.stdout
    assert _revision(url) == schema.head()
    assert f"already at revision {schema.head()}" in cli.invoke(app, ["hub", "migrate", "--db", url]).stdout
