"""A NATS cluster with TLS (ADR 0048): ``edgeship hub broker-config --engine nats --tls-host`` on the real engine.

One cluster for the file (module scope), started from the files the CLI wrote with a
certificate from a fresh hub CA: devices and the hub connect over ``mqtts://`` with the
CA; plain MQTT and a client trusting another CA are refused; the NATS client port and the
routes ask for TLS too; the hub's ``--nats-inbound tls://`` stores a device's report; an
agent link given every node fails over between TLS nodes. The failover test kills a node
and runs last.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hub_workspace import make_hub_workspace
from nats_cluster import NatsCluster
from typer.testing import CliRunner

from edgeship.agent.link.mqtt import Inbound, MqttLink
from edgeship.cli import app
from edgeship.errors import InputError, TransportError
from edgeship.hub.broker.ca import CertificateAuthority
from edgeship.hub.broker.nats import (
    NatsFiles,
    NatsNode,
    NatsSettings,
    NatsTls,
    check_tls_files,
    hash_password_bcrypt,
    render_node_config,
)
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.store import HubStore, sqlite_url
from edgeship.mqtt import device_topic, parse_broker_url
from edgeship.mqtt.client import make_client

DEVICE = "site.t"  # a '.' in the id: NATS maps it in subjects and client ids


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


@dataclass
class TlsCluster:
    running: NatsCluster
    ca_file: Path  # the hub CA's certificate the CLI wrote beside the configs
    workspace: Path  # the hub's workspace (hub.db with DEVICE)
    output: str
    command: list[str]  # the broker-config arguments that wrote the folder (a renewal runs them again)

    def url(self, index: int, scheme: str = "mqtts") -> str:
        return f"{scheme}://127.0.0.1:{self.running.nodes[index].mqtt_port}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    root = tmp_path_factory.mktemp("nats-tls")
    ws, _world = make_hub_workspace(root / "ws", modules=0)
    store = HubStore(sqlite_url(ws.root))
    try:
        store.add_devices([(DEVICE, {})], datetime.now(timezone.utc))
    finally:
        store.close()
    (root / "hub.pw").write_text("hub-secret\n")
    (root / "devices.pw").write_text(f"{DEVICE}:{hash_password_bcrypt('dev-pw')}\n")
    nodes = NatsCluster.pick_nodes(3)
    out = root / "nats"
    specs = [f"{n.name}={n.host}:{n.client_port},{n.cluster_port},{n.mqtt_port},{n.http_port}" for n in nodes]
    command = [
        "hub", "broker-config", "--engine", "nats", "-o", str(out), "--db", sqlite_url(ws.root),
        "--hub-password-file", str(root / "hub.pw"), "--device-passwords", str(root / "devices.pw"),
        "--tls-host", "localhost", "--ca-dir", str(root / "ca"), *(a for spec in specs for a in ("--nats-node", spec)),
    ]  # fmt: skip
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    files = NatsFiles({n.name: out / f"{n.name}.conf" for n in nodes}, out / "users.conf")
    with NatsCluster.from_files(out, nodes, files) as running:
        yield TlsCluster(running, out / "ca.pem", ws.root, result.output, command)


class Session:
    """A logged-in MQTT client over the URL's scheme that records CONNACKs and messages."""

    def __init__(self, url: str, username: str, password: str, ca_file: Path | None) -> None:
        settings = parse_broker_url(url, username=username, password=password, ca_file=ca_file)
        self.client = make_client(settings, username, persistent=False)
        self.connack: list[int] = []
        self.messages: list[tuple[str, bytes]] = []
        self.closed = False
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(int(rc.value))
        self.client.on_disconnect = lambda *_: setattr(self, "closed", True)
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(settings.host, settings.port)  # the TLS handshake happens here
        self.client.loop_start()
        started = time.monotonic()
        wait_for(lambda: bool(self.connack) or self.closed or time.monotonic() > started + 5, 10, "a CONNACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def info_line(host: str, port: int, context: ssl.SSLContext | None = None) -> dict[str, Any] | None:
    """The ``INFO {...}`` a NATS port sends first (client and route protocols both start with it), over TLS with
    ``context``; None if nothing came within a second (a port that waits for a TLS handshake first)."""
    with socket.create_connection((host, port), timeout=10) as raw:
        sock = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
        sock.settimeout(1.0)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
        except TimeoutError:
            return None
    assert data.startswith(b"INFO "), data[:100]
    return dict(json.loads(data[5:data.index(b"\r\n")]))


def test_the_rendered_node_config_asks_for_tls_on_mqtt_clients_and_routes(tmp_path: Path) -> None:
    nodes = [NatsNode(f"n{i}", 4222, 6222, 8883, 8222, host=f"10.0.0.{i + 1}") for i in range(3)]
    tls = NatsTls(tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem")
    text = render_node_config(nodes[0], nodes, NatsSettings(tls=tls), tmp_path / "d", tmp_path / "users.conf")
    crt, key, ca = (f'"{p.resolve()}"' for p in (tls.cert_file, tls.key_file, tls.ca_file))
    lines = {line.split(" ")[0].rstrip(":"): line for line in text.splitlines() if not line.startswith("#")}
    assert lines["tls"] == f"tls {{ cert_file: {crt}, key_file: {key}, timeout: 5 }}"  # the NATS client port
    assert f"tls {{ cert_file: {crt}, key_file: {key}, ca_file: {ca}, timeout: 5 }} }}" in lines["cluster"]
    assert lines["mqtt"].endswith(f"tls {{ cert_file: {crt}, key_file: {key}, timeout: 5 }} }}")
    plain = render_node_config(nodes[0], nodes, NatsSettings(), tmp_path / "d", tmp_path / "users.conf")
    assert "tls" not in plain
    # every port on the node's address but monitoring, which has no login and lists every connection (/connz)
    assert lines["listen"] == "listen: 10.0.0.1:4222" and lines["http"] == "http: 127.0.0.1:8222"


def test_tls_files_that_are_missing_open_to_others_or_not_a_pair_are_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    one, other = ca.issue_server(["localhost"]), ca.issue_server(["localhost"])
    (tmp_path / "ca.pem").write_text(ca.cert_pem)
    (tmp_path / "server.crt").write_text(one.cert_pem)
    key = tmp_path / "server.key"
    key.write_text(one.key_pem)
    key.chmod(0o600)
    tls = NatsTls(tmp_path / "server.crt", key, tmp_path / "ca.pem")
    check_tls_files(tls)
    key.chmod(0o644)
    with pytest.raises(InputError, match=r"may be read by group or others \(mode 644\); run chmod 600"):
        check_tls_files(tls)
    key.chmod(0o600)
    with pytest.raises(InputError, match=r"Cannot read the NATS TLS CA certificate .*missing\.pem"):
        check_tls_files(NatsTls(tls.cert_file, key, tmp_path / "missing.pem"))
    key.write_text(other.key_pem)
    with pytest.raises(InputError, match=r"does not belong to the certificate"):
        check_tls_files(tls)
    result = CliRunner().invoke(app, ["hub", "broker-config", "--engine", "nats", "-o", str(tmp_path / "o"),
                                      "--hub-password-file", str(tmp_path / "x"), "--require-certificate"])
    assert isinstance(result.exception, InputError) and "devices log in by password" in str(result.exception)


def test_the_cli_issues_one_certificate_for_every_node_and_keeps_its_key_private(cluster: TlsCluster) -> None:
    from cryptography import x509

    folder = cluster.ca_file.parent
    assert (folder / "server.key").stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate((folder / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]  # the nodes' one host
    assert "TLS only on every node's MQTT, client and route ports" in " ".join(cluster.output.split())


def test_a_device_logs_in_over_mqtts_and_receives_its_retained_document(cluster: TlsCluster) -> None:
    hub = Session(cluster.url(2), "hub", "hub-secret", cluster.ca_file)
    try:
        assert hub.connack == [0]
        hub.client.publish(device_topic(DEVICE, "desired"), b"document over TLS", qos=1,
                           retain=True).wait_for_publish(10)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:  # a node learns another node's retained message asynchronously: a new session may miss it once
            device = Session(cluster.url(0), DEVICE, "dev-pw", cluster.ca_file)
            device.client.subscribe(device_topic(DEVICE, "desired"), 1)
            try:
                wait_for(lambda d=device: bool(d.messages), 5, "the retained document")  # type: ignore[misc]
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the device never received its retained document"
            finally:
                device.close()
        assert device.connack == [0] and device.messages == [(device_topic(DEVICE, "desired"), b"document over TLS")]
    finally:
        hub.close()


def test_plain_mqtt_and_a_client_trusting_another_ca_are_refused(cluster: TlsCluster, tmp_path: Path) -> None:
    plain = Session(cluster.url(1, "mqtt"), DEVICE, "dev-pw", None)
    plain.close()
    assert plain.connack == [] and plain.closed  # the listener took the CONNECT for a broken TLS handshake
    stranger = tmp_path / "other-ca.pem"
    stranger.write_text(CertificateAuthority.create().cert_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        Session(cluster.url(1), DEVICE, "dev-pw", stranger)
    node, folder = cluster.running.nodes[1], cluster.ca_file.parent
    assert (info_line(node.host, node.client_port) or {}).get("tls_required") is True  # nats-py upgrades, or stops
    assert info_line(node.host, node.cluster_port) is None  # a route says nothing before the TLS handshake
    peer = ssl.create_default_context(cafile=cluster.ca_file)
    peer.load_cert_chain(folder / "server.crt", folder / "server.key")  # what another node presents
    assert (info_line(node.host, node.cluster_port, peer) or {}).get("tls_required") is True


@pytest.mark.slow  # ~10-13 s
def test_the_hub_takes_a_devices_report_from_nats_over_tls_and_needs_the_ca_for_it(cluster: TlsCluster) -> None:
    node = cluster.running.nodes[1]
    config = HubConfig(workspace=cluster.workspace, broker_url=cluster.url(1), broker_username="hub",
                       broker_password="hub-secret", broker_ca=cluster.ca_file, port=0,
                       nats_inbound=(f"tls://127.0.0.1:{node.client_port}",))  # fmt: skip
    report = {"schemaVersion": 1, "deviceId": DEVICE, "lastAppliedSequence": 3,
              "status": {"code": 200, "description": "ok", "message": None}, "modules": {}}  # fmt: skip
    with HubServer(config) as hub:
        device = Session(cluster.url(0), DEVICE, "dev-pw", cluster.ca_file)
        try:
            device.client.publish(device_topic(DEVICE, "reported"), json.dumps(report), qos=1).wait_for_publish(10)
            stored = lambda: hub.services.store.reported([DEVICE]).get(DEVICE)  # noqa: E731
            wait_for(lambda: stored() is not None and stored().state == report, 30, "the report in the hub's store")
        finally:
            device.close()
        assert hub.inbound is not None and hub.inbound.acknowledged >= 1  # it came through the NATS stream
    without_ca = HubConfig(workspace=cluster.workspace, embedded_broker=True, broker_port=0, port=0,
                           nats_inbound=(f"tls://127.0.0.1:{node.client_port}",))  # the system's CAs only
    with pytest.raises(TransportError, match=r"could not log in to NATS .*--broker-ca names the CA that signed"):
        HubServer(without_ca).start()


@pytest.mark.slow  # ~10-13 s
def test_an_agent_link_given_every_tls_node_fails_over_between_them(cluster: TlsCluster) -> None:
    addresses = [parse_broker_url(cluster.url(i), username=DEVICE, password="dev-pw", ca_file=cluster.ca_file)
                 for i in range(3)]  # fmt: skip
    inbox: queue.Queue[Inbound] = queue.Queue()
    link = MqttLink(addresses, DEVICE, inbox)
    hub = Session(cluster.url(2), "hub", "hub-secret", cluster.ca_file)

    def received(payload: bytes, timeout: float) -> None:
        """Publish retained until the link hands it over, again every 5 s (the hub's recovery pass, ADR 0044)."""
        deadline = time.monotonic() + timeout
        while True:
            hub.client.publish(device_topic(DEVICE, "desired"), payload, qos=1, retain=True).wait_for_publish(10)
            until = time.monotonic() + 5
            while time.monotonic() < until:
                try:
                    item = inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item.kind == "desired" and item.payload == payload:
                    return
            assert time.monotonic() < deadline, f"the link never received {payload!r}"

    try:
        link.start()
        received(b"document 1", 30)
        assert link.settings.port == cluster.running.nodes[0].mqtt_port and link.settings.tls
        cluster.running.kill(0)
        wait_for(lambda: link.connected.is_set() and link.settings.port != cluster.running.nodes[0].mqtt_port, 60,
                 "the link on another TLS node")  # fmt: skip
        received(b"document 2", 30)
        assert link.failovers >= 1
    finally:
        link.stop()
        hub.close()


def test_a_renewed_certificate_is_served_after_a_reload_without_a_restart(cluster: TlsCluster) -> None:
    """ADR 0048's renewal: the same broker-config again, then ``nats-server --signal reload`` (SIGHUP) per node."""
    import ssl

    from cryptography import x509

    def serial(pem: bytes) -> int:
        return int(x509.load_pem_x509_certificate(pem).serial_number)

    folder = cluster.ca_file.parent
    up = [i for i, process in enumerate(cluster.running.processes) if process is not None]  # the fail-over test kills
    nodes = [cluster.running.nodes[i] for i in up]
    old, pids = serial((folder / "server.crt").read_bytes()), [cluster.running.pid(i) for i in up]
    result = CliRunner().invoke(app, cluster.command)
    assert result.exit_code == 0, result.output
    new = serial((folder / "server.crt").read_bytes())
    assert new != old
    cluster.running.reload()
    for node in nodes:
        served = lambda node=node: serial(ssl.get_server_certificate(("127.0.0.1", node.mqtt_port)).encode())  # noqa: E731
        wait_for(lambda served=served: served() == new, 15, f"node {node.name} to serve the renewed certificate")
    assert len(nodes) >= 2 and [cluster.running.pid(i) for i in up] == pids  # reloaded, not restarted
    device = Session(cluster.url(up[0]), DEVICE, "dev-pw", cluster.ca_file)
    try:
        assert device.connack == [0]
    finally:
        device.close()
