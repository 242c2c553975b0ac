"""Diagnostic (ADR 0047): does the inbound JetStream stream hold every MQTT QoS 1 publish NATS acknowledged, when
the node leading the stream is SIGKILLed?

A 3-node cluster (``tests/scale/nats_cluster.py``), the stream as ``hub serve --nats-inbound`` makes it (R3, the
inbound subjects; limits retention here, so nothing is removed), one MQTT client on a node that stays up publishing
numbered telemetry payloads (QoS 1) for ``--seconds``; ``--kill-after`` seconds in, the stream's leader node is
killed. Then every message of the stream is read back: how many numbers PUBACKed are missing, and how many are
there twice. Each ``--runs`` uses a fresh cluster.

    python benchmarks/broker/stream_capture.py --runs 3

Not a test: it records what the engine does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (REPO / "tests", REPO / "tests" / "scale"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import paho.mqtt.client as paho  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402

from edgeship.hub.bridge.nats_inbound import stream_subjects  # noqa: E402
from edgeship.hub.broker.nats import INBOUND_CONSUMER, INBOUND_STREAM, NatsUser, hash_password_bcrypt  # noqa: E402


async def _stream(port: int, *, create: bool) -> tuple[str, list[int]]:
    """The stream's leader, and (after the run) every payload number it holds, in order."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    connection = await nats.connect(f"nats://127.0.0.1:{port}", user="hub-0", password="pw")
    try:
        js = connection.jetstream(timeout=10.0)
        if create:
            await js.add_stream(StreamConfig(name=INBOUND_STREAM, subjects=stream_subjects(), num_replicas=3,
                                             retention=RetentionPolicy.LIMITS))  # fmt: skip
            return (await js.stream_info(INBOUND_STREAM)).cluster.leader, []
        info = await js.stream_info(INBOUND_STREAM)
        reader = await js.pull_subscribe("", durable=INBOUND_CONSUMER, stream=INBOUND_STREAM,  # the hub user's one
                                         config=ConsumerConfig(ack_policy=AckPolicy.NONE))  # fmt: skip
        numbers: list[int] = []
        while len(numbers) < info.state.messages:
            numbers += [json.loads(m.data)["n"] for m in await reader.fetch(1000, timeout=5)]
        return info.cluster.leader, numbers
    finally:
        await connection.close()


def run_once(folder: Path, seconds: float, kill_after: float) -> dict[str, object]:
    hashed = hash_password_bcrypt("pw")
    cluster = NatsCluster(folder, [NatsUser("hub-0", hashed), NatsUser("hub-1", hashed)]).start()
    try:
        leader, _ = asyncio.run(_stream(cluster.nodes[0].client_port, create=True))
        victim = [node.name for node in cluster.nodes].index(leader)
        stays = next(i for i in range(len(cluster.nodes)) if i != victim)
        acked: set[int] = set()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="hub-1", clean_session=True)
        client.username_pw_set("hub-1", "pw")
        mids: dict[int, int] = {}
        client.on_publish = lambda _c, _u, mid, _r, _p: acked.add(mids.get(mid, -1))
        client.connect("127.0.0.1", cluster.nodes[stays].mqtt_port)
        client.loop_start()
        time.sleep(1.0)
        sent, began, killed_at = 0, time.monotonic(), None
        while time.monotonic() - began < seconds:
            info = client.publish(f"edgeship/v1/devices/dev.{sent % 50}/telemetry", json.dumps({"n": sent}), qos=1)
            mids[info.mid] = sent
            sent += 1
            if killed_at is None and time.monotonic() - began > kill_after:
                cluster.kill(victim)
                killed_at = sent
            time.sleep(0.005)
        time.sleep(5.0)
        client.disconnect()
        client.loop_stop()
        new_leader, numbers = asyncio.run(_stream(cluster.nodes[stays].client_port, create=False))
        held = Counter(numbers)
        return {"leader_killed": leader, "new_leader": new_leader, "sent": sent, "acknowledged": len(acked),
                "killed_after_message": killed_at, "missing": len(acked - set(held)),
                "twice": sum(1 for n in held.values() if n > 1)}  # fmt: skip
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kill-after", type=float, default=5.0)
    args = parser.parse_args()
    for _run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="edgeship-capture-") as tmp:
            print(json.dumps(run_once(Path(tmp), args.seconds, args.kill_after)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
