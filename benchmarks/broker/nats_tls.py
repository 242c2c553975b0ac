"""What TLS costs a NATS cluster (ADR 0048): logins and messages, plain beside TLS, in one run.

Per round, for each mode (plain, then TLS, or the other way round on odd rounds so neither always
runs first), a fresh 3-node cluster from ``edgeship.hub.broker.nats`` (TLS: one certificate from
a fresh hub CA, as ``broker-config --tls-host`` writes it) and two phases:

- *logins*: ``--logins`` device sessions, one after another, each connecting to node ``i % 3``
  (``mqtts://`` with the CA in TLS mode), waiting for its CONNACK and disconnecting: a
  reconnect storm's unit of work (bcrypt check + TLS handshake);
- *messages*: ``--messages`` QoS 1 publishes of 1 KiB as the hub on node 0 to devices' telemetry
  topics, read by a second hub user subscribed (QoS 0) on node 1, so every message also crosses a
  route; timed from the first publish to the last message read.

Wall seconds and the three nodes' CPU seconds (user + system, ``/proc``) per phase. Read the
ratios within a round: the machine is shared.

    python benchmarks/broker/nats_tls.py --rounds 3 --logins 200 --messages 5000

Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (REPO / "tests", REPO / "tests" / "scale", REPO / "benchmarks" / "fleet"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from cluster import tree_cpu  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402

from edgeship.fsutil import atomic_write_text  # noqa: E402
from edgeship.hub.broker.ca import CertificateAuthority  # noqa: E402
from edgeship.hub.broker.nats import NatsSettings, NatsTls, NatsUser, hash_password_bcrypt  # noqa: E402
from edgeship.mqtt import device_topic, parse_broker_url  # noqa: E402
from edgeship.mqtt.client import make_client  # noqa: E402

PAYLOAD = b"x" * 1024


def tls_files(folder: Path) -> NatsTls:
    ca = CertificateAuthority.create()
    server = ca.issue_server(["127.0.0.1", "localhost"], also_client=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "ca.pem", ca.cert_pem)
    atomic_write_text(folder / "server.crt", server.cert_pem)
    atomic_write_text(folder / "server.key", server.key_pem, mode=0o600)
    return NatsTls(folder / "server.crt", folder / "server.key", folder / "ca.pem")


def session(url: str, username: str, password: str, ca: Path | None) -> Any:
    settings = parse_broker_url(url, username=username, password=password, ca_file=ca)
    client = make_client(settings, username, persistent=False)
    connack: list[int] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: connack.append(int(rc.value))
    client.connect(settings.host, settings.port)
    client.loop_start()
    deadline = time.monotonic() + 30
    while not connack:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no CONNACK from {url} for {username} in 30 s")
        time.sleep(0.002)
    if connack != [0]:
        raise RuntimeError(f"{url} refused {username}: {connack}")
    return client


def cpu(cluster: NatsCluster) -> float:
    return sum(tree_cpu(cluster.pid(i)) for i in range(len(cluster.nodes)))


def measure(workdir: Path, users: list[NatsUser], tls: NatsTls | None, logins: int, messages: int) -> dict[str, Any]:
    scheme, ca = ("mqtts", tls.ca_file) if tls else ("mqtt", None)
    with NatsCluster(workdir, users, settings=NatsSettings(tls=tls)) as cluster:
        urls = [f"{scheme}://127.0.0.1:{node.mqtt_port}" for node in cluster.nodes]
        load_start = os.getloadavg()[0]
        cpu0, t0 = cpu(cluster), time.monotonic()
        for i in range(logins):
            client = session(urls[i % 3], f"dev-{i:04d}", "dev-pw", ca)
            client.disconnect()
            client.loop_stop()
        login_s, login_cpu = time.monotonic() - t0, cpu(cluster) - cpu0

        reader = session(urls[1], "hub-2", "hub-pw", ca)
        got = [0]
        subscribed: list[int] = []
        reader.on_message = lambda _c, _u, _m: got.__setitem__(0, got[0] + 1)
        reader.on_subscribe = lambda *_: subscribed.append(1)
        reader.subscribe("edgeship/v1/devices/+/telemetry", 0)
        while not subscribed:
            time.sleep(0.01)
        writer = session(urls[0], "hub", "hub-pw", ca)
        time.sleep(0.5)  # the subscription's interest reaches the other nodes
        cpu0, t0 = cpu(cluster), time.monotonic()
        last = None
        for i in range(messages):
            last = writer.publish(device_topic(f"dev-{i % logins:04d}", "telemetry"), PAYLOAD, qos=1)
        assert last is not None
        last.wait_for_publish(120)
        deadline = time.monotonic() + 120
        while got[0] < messages and time.monotonic() < deadline:
            time.sleep(0.005)
        message_s, message_cpu = time.monotonic() - t0, cpu(cluster) - cpu0
        for client in (writer, reader):
            client.disconnect()
            client.loop_stop()
        return {"mode": "TLS" if tls else "plain", "load_start": round(load_start, 1),
                "load_end": round(os.getloadavg()[0], 1), "logins": logins, "login_s": round(login_s, 2),
                "login_cpu_s": round(login_cpu, 2), "messages": messages, "received": got[0],
                "message_s": round(message_s, 2), "message_cpu_s": round(message_cpu, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    args = parser.parse_args()
    device_hash, hub_hash = hash_password_bcrypt("dev-pw"), hash_password_bcrypt("hub-pw")
    users = [NatsUser("hub", hub_hash), NatsUser("hub-2", hub_hash),
             *(NatsUser(f"dev-{i:04d}", device_hash) for i in range(args.logins))]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="nats-tls-bench-") as scratch:
        root = Path(scratch)
        tls = tls_files(root / "tls")
        for round_ in range(args.rounds):
            modes = [None, tls] if round_ % 2 == 0 else [tls, None]
            for mode in modes:
                row = measure(root / f"r{round_}-{'tls' if mode else 'plain'}", users, mode, args.logins,
                              args.messages)  # fmt: skip
                row["round"] = round_ + 1
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| round | mode | load start / end | logins s (node CPU s) | messages s (node CPU s), received |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['round']} | {r['mode']} | {r['load_start']} / {r['load_end']} | {r['login_s']} "
              f"({r['login_cpu_s']}) | {r['message_s']} ({r['message_cpu_s']}), {r['received']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
