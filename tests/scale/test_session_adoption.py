"""What Mosquitto does with a SIGKILLed shared-subscription member's messages, and how a survivor drains them.

Measured on the real broker (ADR 0037): a hub process speaking MQTT 5 with a persistent
session is killed; telemetry published afterwards is split between it and a live member
of the same ``$share/hub`` group, so the dead session holds its share until a client with
its id comes back. :func:`adopt_session` is that client: it resumes the session, stores
what was queued (through the fleet service, de-duplicated) and ends the session, so
nothing is queued for the dead replica any more.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from hub_process import HubProcess
from hub_workspace import make_hub_workspace

from edgeship.hub.bridge.adopt import adopt_session
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import device_topic, parse_broker_url
from edgeship.mqtt.client import connect_properties, make_client

SAMPLES = 40
SHARED = "$share/hub/edgeship/v1/devices/+/telemetry"


def _batch(seq: int) -> bytes:
    at = datetime(2026, 12, 5, tzinfo=timezone.utc) + timedelta(seconds=seq)
    sample = {"time": at.isoformat().replace("+00:00", "Z"), "seq": seq, "cpuPercent": 1.0, "memoryBytes": 1,
              "modules": {}}
    return json.dumps({"schemaVersion": 1, "deviceId": "dev-1", "dropped": 0, "samples": [sample]}).encode()


class LiveMember:
    """Another replica's share of the group: a persistent MQTT 5 session that acknowledges everything."""

    def __init__(self, url: str) -> None:
        settings = parse_broker_url(url, protocol="5")
        self.client = make_client(settings, "hub-live", persistent=True)
        self.seqs: list[int] = []
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe(SHARED, qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.seqs.append(json.loads(m.payload)["samples"][0]["seq"])
        self.client.connect(settings.host, settings.port, clean_start=False,
                            properties=connect_properties(settings, True))
        self.client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_killed_members_share_waits_in_its_session_until_a_survivor_drains_it(tmp_path: Path,
                                                                                 mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "ws")
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        hub.services.fleet.create_device("dev-1")
    dead = HubProcess(ws.root, mosquitto.url, tmp_path / "dead.log", username="hub-dead", mqtt5=True).start()
    live = LiveMember(mosquitto.url)
    dead.kill()
    publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sender")
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    for seq in range(1, SAMPLES + 1):
        publisher.publish(device_topic("dev-1", "telemetry"), _batch(seq), qos=1).wait_for_publish(10)
    time.sleep(1.0)
    live_share = set(live.seqs)
    assert 0 < len(live_share) < SAMPLES  # the broker kept giving the dead session its round-robin share

    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as survivor:
        fleet = survivor.services.fleet
        drained = adopt_session(parse_broker_url(mosquitto.url, protocol="5"), "hub-dead", fleet, quiet=0.5)
        stored = {s["seq"] for record in fleet.recent_telemetry("dev-1", 1000) for s in record.batch["samples"]}
    assert drained == SAMPLES - len(live_share)
    assert stored | live_share == set(range(1, SAMPLES + 1)) and not stored & live_share

    # the session is gone: what is published now goes to the live member only
    before = len(live.seqs)
    for seq in range(SAMPLES + 1, SAMPLES + 11):
        publisher.publish(device_topic("dev-1", "telemetry"), _batch(seq), qos=1).wait_for_publish(10)
    deadline = time.monotonic() + 10
    while len(live.seqs) < before + 10:
        assert time.monotonic() < deadline, f"{len(live.seqs) - before} of 10 reached the live member"
        time.sleep(0.05)
    publisher.loop_stop()
    live.close()
