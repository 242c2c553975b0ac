"""A report is acknowledged only once stored: a replica killed between receiving it and committing it leaves it
in its broker session, where the survivor's drain finds and stores it (ADR 0037, revision).

Real parts: Mosquitto, ``edgeship hub serve`` as a process speaking MQTT 5 with a
persistent session (``--broker-username hub-0``), so it subscribes as a replica does
(``$share/hub/...``), and SQLite. The test holds SQLite's write lock, so the hub's
worker takes the report and then waits in the transaction that stores it; the hub is
SIGKILLed there and never comes back. A survivor drains its session as the coordinator
does (``adopt_session``): the drain gets only what the dead hub did not acknowledge,
and, unsubscribed, it is not sent the retained report again. With the PUBACK sent on
receipt (before this fix) the report was lost: the replica kill test's stuck waves.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hub_process import HubProcess
from hub_workspace import make_hub_workspace
from mqtt_probe import Probe

from edgeship.hub.bridge.adopt import adopt_session
from edgeship.hub.server import HubConfig, HubServer, load_hub_keys
from edgeship.hub.services import HubServices, OfflineLink
from edgeship.hub.store import HubStore, sqlite_url
from edgeship.mqtt import device_topic, parse_broker_url
from edgeship.registry.blobs import BlobStore

pytestmark = pytest.mark.slow

DEVICE = "dev-1"
TAKEN = 1.0  # seconds the hub's worker gets to take the report off its queue (it then waits on the lock)


def test_a_report_a_killed_replica_had_not_stored_is_stored_by_the_drain_of_its_session(tmp_path: Path,
                                                                                        mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=0)
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as seed:
        seed.services.fleet.create_device(DEVICE, {"site": "lab"})
    replica = HubProcess(ws.root, mosquitto.url, tmp_path / "hub-0.log", username="hub-0", mqtt5=True).start()
    probe = Probe(mosquitto.url)
    report = {"schemaVersion": 1, "deviceId": DEVICE, "lastAppliedSequence": 7,
              "status": {"code": 200, "description": "ok", "message": None}, "modules": {}}
    lock = sqlite3.connect(ws.root / "hub.db", isolation_level=None)
    store = HubStore(sqlite_url(ws.root))
    try:
        lock.execute("BEGIN IMMEDIATE")  # the hub's store waits for this (its busy timeout is 30 s)
        probe.publish(device_topic(DEVICE, "reported"), json.dumps(report), qos=1, retain=True)
        time.sleep(TAKEN)
        replica.kill()
        assert replica.process is not None and replica.process.returncode == -signal.SIGKILL
        lock.execute("ROLLBACK")

        # the survivor's services, with no subscription of their own (a subscribing bridge would be sent the
        # retained report and hide a lost one): only the drain can bring the report in
        trust_root, signer = load_hub_keys(ws)
        fleet = HubServices.build(store, BlobStore(ws.blobs_dir, ws.tmp_dir), trust_root, [signer],
                                  OfflineLink()).fleet
        assert fleet.get_device(DEVICE).reported is None  # the kill came before the commit
        drained = adopt_session(parse_broker_url(mosquitto.url, protocol="5"), "hub-0", fleet)
        assert drained >= 1, f"the dead replica acknowledged the report it had not stored: {replica.log.read_text()}"
        stored = fleet.get_device(DEVICE).reported
        assert stored is not None and stored.state == report
    finally:
        lock.close()
        store.close()
        probe.close()
        replica.stop()
