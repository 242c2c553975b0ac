"""``edgeship hub serve --nats-config-dir``: a running hub keeps a real 3-node NATS cluster's logins current.

One cluster and one hub process for the file (module scope): the folder comes from
``edgeship hub broker-config --engine nats``, the nodes start from it (each writes its pid
there), and the hub serves with ``--nats-config-dir`` on it. Devices are created,
rotated and deleted over the hub's REST API only; nobody runs ``broker-config`` again or
signals a node, and each device logs in (or is refused) on the real cluster. The hub's
failures (a folder it cannot use, a node it cannot reload, a reload command that fails)
are checked on ``ManagedNats`` itself, without a cluster.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_process import HubProcess
from hub_workspace import make_hub_workspace
from nats_cluster import NatsCluster
from postgres_server import PostgresServer
from test_nats_permissions import Session
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ConfigError, InputError
from edgeship.hub.broker.nats import NatsFiles, NatsUser, hash_password_bcrypt, parse_users, render_users
from edgeship.hub.broker.nats_reload import ManagedNats, parse_reload_command
from edgeship.hub.broker.reload import BrokerState
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import device_topic

EDGESHIP = [sys.executable, "-m", "edgeship"]
LOGIN_WAIT = 15.0  # seconds for a login to turn accepted (or refused) after the hub's answer: NATS reloads async


@dataclass
class Running:
    cluster: NatsCluster
    hub: HubProcess
    folder: Path
    headers: dict[str, str]

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = httpx.post(f"{self.hub.url}{path}", json=body, headers=self.headers, timeout=60)
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    def create(self, device_id: str) -> tuple[str, str]:
        """``POST /devices``: the device's one-time password and the broker outcome."""
        answer = self.post("/devices", {"id": device_id, "tags": {"site": "lab"}})
        return str(answer["credentials"]["password"]), str(answer["broker"])


def login(url: str, username: str, password: str) -> int | None:
    """The CONNACK code of one login (None: the node closed the connection without one)."""
    session = Session(url, username, password)
    session.close()
    return session.connack[0] if session.connack else None


def eventually(condition: Callable[[], bool], timeout: float = LOGIN_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("nats-reload")
    ws, _world = make_hub_workspace(root / "ws", modules=0)
    (root / "hub.pw").write_text("hub-secret\n")
    nodes = NatsCluster.pick_nodes(3)
    folder = root / "nats"
    specs = [f"{n.name}={n.host}:{n.client_port},{n.cluster_port},{n.mqtt_port},{n.http_port}" for n in nodes]
    for command in (
        ["hub", "broker-config", "--engine", "nats", "-o", str(folder), "-w", str(ws.root), "--hub-password-file",
         str(root / "hub.pw"), *(arg for spec in specs for arg in ("--nats-node", spec))],
        ["hub", "token", "create", "tests", "-w", str(ws.root)],
    ):  # fmt: skip
        result = subprocess.run([*EDGESHIP, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    files = NatsFiles({n.name: folder / f"{n.name}.conf" for n in nodes}, folder / "users.conf")
    with NatsCluster.from_files(folder, nodes, files) as cluster:
        assert eventually(lambda: all((folder / f"{n.name}.pid").exists() for n in nodes))
        hub = HubProcess(ws.root, cluster.urls[0], root / "hub.log", username="hub", password="hub-secret",
                         extra=("--nats-config-dir", str(folder)))  # fmt: skip
        hub.start()
        try:
            yield Running(cluster, hub, folder, {"Authorization": f"Bearer {token}"})
        finally:
            hub.stop()


def test_a_device_created_through_the_hub_logs_in_on_every_node_without_broker_config(running: Running) -> None:
    password, broker = running.create("cam.1")
    assert broker == "reloaded"
    for url in running.cluster.urls:
        assert eventually(lambda url=url: login(url, "cam.1", password) == 0), url
    device = Session(running.cluster.urls[2], "cam.1", password)
    try:
        assert device.subscribe(device_topic("cam.1", "desired")) == [1]
    finally:
        device.close()
    users = running.folder / "users.conf"
    assert users.stat().st_mode & 0o077 == 0 and password not in users.read_text()
    assert set(parse_users(users.read_text())) == {"hub", "cam.1"}  # the hub's line kept from broker-config


def test_after_a_rotation_the_old_password_is_refused_and_the_new_one_accepted(running: Running) -> None:
    first, _ = running.create("cam-2")
    url = running.cluster.urls[1]
    assert eventually(lambda: login(url, "cam-2", first) == 0)
    live = Session(url, "cam-2", first)  # connected with the old password: the reload closes it
    try:
        rotated = running.post("/devices/cam-2/credentials/rotate")
        assert rotated["broker"] == "reloaded"
        second = str(rotated["credentials"]["password"])
        assert eventually(lambda: login(url, "cam-2", first) != 0)
        assert login(url, "cam-2", second) == 0
        assert not live.client.is_connected()
    finally:
        live.close()


def test_a_deleted_device_is_refused(running: Running) -> None:
    password, _ = running.create("cam-3")
    url = running.cluster.urls[2]
    assert eventually(lambda: login(url, "cam-3", password) == 0)
    answer = httpx.delete(f"{running.hub.url}/devices/cam-3", headers=running.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert eventually(lambda: login(url, "cam-3", password) != 0)
    assert "cam-3" not in parse_users((running.folder / "users.conf").read_text())


def test_a_node_that_cannot_be_reloaded_is_named_and_the_hub_keeps_serving(running: Running) -> None:
    """A stale pid file (another program has the pid) gets no SIGHUP; the other nodes are reloaded."""
    pid_file = running.folder / "n0.pid"
    real = pid_file.read_text()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(f"{stranger.pid}\n")
        password, broker = running.create("cam-4")
        assert broker.startswith("failed: ") and "node n0 (pid" in broker and "is no running nats-server" in broker
        assert stranger.poll() is None  # not signalled
        assert eventually(lambda: login(running.cluster.urls[1], "cam-4", password) == 0)
        assert httpx.get(f"{running.hub.url}/devices/cam-4", headers=running.headers, timeout=30).status_code == 200
    finally:
        pid_file.write_text(real)
        stranger.kill()
        stranger.wait(10)
    assert "NATS did not reload on node n0" in running.hub.log.read_text()


# ManagedNats alone: what it refuses, and the reload commands -------------------------------------------------------
def _state(**bcrypt: str) -> BrokerState:
    return BrokerState(tuple(bcrypt), {}, bcrypt_hashes=bcrypt)


def test_a_folder_that_is_missing_or_has_no_running_node_is_a_clear_error_at_start(tmp_path: Path) -> None:
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=0)
    serve = ["hub", "serve", "-w", str(ws.root), "--broker", "mqtt://127.0.0.1:1", "--port", "0"]
    for options, error, message in (
        (["--nats-config-dir", str(tmp_path / "missing")], ConfigError,
         r"NATS config folder .*missing does not exist; write it with 'edgeship hub broker-config --engine nats"),
        (["--nats-config-dir", str(tmp_path), "--broker-config-dir", str(tmp_path)], InputError,
         r"Give --broker-config-dir \(Mosquitto\) or --nats-config-dir \(a NATS cluster\), not both"),
        (["--nats-reload-command", "true"], InputError, r"--nats-reload-command needs --nats-config-dir"),
    ):  # fmt: skip
        result = CliRunner().invoke(app, [*serve, *options])
        assert isinstance(result.exception, error) and re.search(message, str(result.exception)), result.output
    with pytest.raises(ConfigError, match=r"has no line for the hub user 'hub'.*broker-config --engine nats"):
        ManagedNats(tmp_path)
    (tmp_path / "n1.conf").write_text("# a node\n")
    with pytest.raises(ConfigError, match=r"No NATS node runs from .* \(no <node>.pid beside n1.conf\)"):
        ManagedNats(tmp_path, hub_password="pw").start(_state)
    assert parse_users((tmp_path / "users.conf").read_text()).keys() == {"hub"}  # written before the reload failed


def test_reload_commands_run_without_a_shell_and_a_failing_one_is_named(tmp_path: Path) -> None:
    seen, script = tmp_path / "seen", tmp_path / "record.py"
    script.write_text("import os, sys\nopen(sys.argv[1], 'a').write(os.environ['EDGESHIP_NATS_USERS'] + '\\n')\n")
    record = parse_reload_command(f"{sys.executable} {script} {seen} ';' '$(touch x)'")
    hashed = hash_password_bcrypt("pw")
    nats = ManagedNats(tmp_path, hub_password="pw", commands=[record, record])
    assert nats.start(lambda: _state(**{"dev-1": hashed})) == "reloaded"
    assert seen.read_text().splitlines() == [str((tmp_path / "users.conf").resolve())] * 2
    assert not (tmp_path / "x").exists()  # no shell: '$(touch x)' is one argument
    failing = ManagedNats(tmp_path, commands=[parse_reload_command("false"), record])
    with pytest.raises(ConfigError, match=r"did not reload on 'false' \(exit status 1: no output\); start the node"):
        failing.apply(lambda: _state())
    assert len(seen.read_text().splitlines()) == 3  # the next command still ran
    for bad, message in (("", "is empty"), ("ssh 'n1", "close its quotes")):
        with pytest.raises(InputError, match=message):
            parse_reload_command(bad)


def test_a_replica_rewrites_on_a_notice_only_what_changed_and_keeps_other_hub_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replica B's own folder after A's change: rewritten once; a second notice changes nothing (no reload)."""
    hashed = hash_password_bcrypt("pw")
    (tmp_path / "users.conf").write_text(render_users([NatsUser("hub-b", hashed), NatsUser("hub-a", hashed)]))
    runs = tmp_path / "runs"
    count = parse_reload_command(f"{sys.executable} -c 'open(\"{runs}\", \"a\").write(\"x\")'")
    replica = ManagedNats(tmp_path, hub_username="hub-b", commands=[count])
    replica.refresh(lambda: _state(**{"dev-1": hashed}))
    replica.refresh(lambda: _state(**{"dev-1": hashed}))
    assert runs.read_text() == "x"
    assert set(parse_users((tmp_path / "users.conf").read_text())) == {"hub-a", "hub-b", "dev-1"}
    (tmp_path / "users.conf").unlink()
    (tmp_path / "users.conf").mkdir()  # cannot be replaced by a file, even by root
    logger = logging.getLogger("edgeship.hub.broker")
    with caplog.at_level(logging.WARNING, logger=logger.name):  # whatever level an earlier test left on its parents
        replica.refresh(lambda: _state())  # a later failure is logged, not raised: the feed's thread keeps going
    assert "NATS users not brought up to date after another replica's change: Cannot write" in caplog.text, (
        f"{logger.name}: disabled={logger.disabled} level={logger.getEffectiveLevel()} propagate={logger.propagate}; "
        f"root handlers {logging.getLogger().handlers}; logging.disable at {logging.root.manager.disable}")
    assert "run the hub as a user that may write the NATS config folder" in caplog.text


def test_devices_reserved_for_the_hub_or_without_a_bcrypt_hash_get_no_login(tmp_path: Path) -> None:
    hashed = hash_password_bcrypt("pw")
    (tmp_path / "users.conf").write_text(render_users([NatsUser("hub", hashed), NatsUser("old", hashed),
                                                       NatsUser("cert", hashed)]))  # fmt: skip
    state = BrokerState(("hub-x", "new", "old", "cert"), {}, bcrypt_hashes={"new": hashed, "hub-x": hashed},
                        operator_hashed=frozenset({"old"}))  # fmt: skip
    ManagedNats(tmp_path, commands=[("true",)]).start(lambda: state)
    users = parse_users((tmp_path / "users.conf").read_text())
    assert set(users) == {"hub", "new", "old"}  # 'old' keeps the operator's line; 'cert' has a certificate now
    assert '"user": "hub-x"' not in (tmp_path / "users.conf").read_text()


def test_a_change_on_one_replica_reaches_the_folder_of_another(tmp_path: Path, postgres: PostgresServer) -> None:
    """Two replicas on one PostgreSQL, each with a folder of its own (one replica per node host): a device created
    on A and deleted on B reaches both folders (LISTEN/NOTIFY ``credentials``), each reloaded by its own command."""
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=0)
    db = postgres.fresh_database()
    hashed = hash_password_bcrypt("hub-pw")
    script = tmp_path / "count.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write('x')\n")
    replicas = []
    for name in ("hub-a", "hub-b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "users.conf").write_text(render_users([NatsUser("hub-a", hashed), NatsUser("hub-b", hashed)]))
        count = (sys.executable, str(script), str(tmp_path / f"{name}.runs"))
        config = HubConfig(workspace=ws.root, db_url=db, embedded_broker=True, broker_port=0, port=0,
                           broker_username=name, nats_config_dir=folder, nats_reload_commands=(count,))  # fmt: skip
        replicas.append(HubServer(config))
    a, b = replicas
    try:
        a.start()
        b.start()

        def users(name: str) -> set[str]:
            return set(parse_users((tmp_path / name / "users.conf").read_text()))

        _view, issued = a.credentials.create_device("cam-r")  # what POST /devices runs on replica A
        assert issued.broker == "reloaded"
        assert "cam-r" in users("hub-a")
        assert eventually(lambda: "cam-r" in users("hub-b")), "replica B's folder never got A's device"
        assert b.credentials.delete_device("cam-r") == "reloaded"
        assert eventually(lambda: "cam-r" not in users("hub-a")), "replica A's folder kept B's deleted device"
        runs_b = (tmp_path / "hub-b.runs").read_text()
        time.sleep(0.5)  # the notices' echoes: nothing more changed, so no more reloads
        assert (tmp_path / "hub-b.runs").read_text() == runs_b
    finally:
        for replica in replicas:
            replica.stop()
