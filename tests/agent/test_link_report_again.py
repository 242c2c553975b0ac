"""The agent's link sends its last report again when the same document arrives again live (ADR 0044): the hub's
recovery pass re-sends a document to a device whose report it lacks; the retained copy every subscribe brings
does not count. Against a real Mosquitto."""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from mqtt_probe import Probe

from edgeship.agent.link.mqtt import Inbound, MqttLink
from edgeship.mqtt import device_topic, parse_broker_url

DEVICE = "dev-1"


def _reports(probe: Probe, seconds: float) -> list[bytes]:
    """The reports the probe got within ``seconds`` (live ones only: the retained copy on subscribe is skipped)."""
    got, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            message = probe.messages.get(timeout=left)
        except queue.Empty:
            break
        if message.topic == device_topic(DEVICE, "reported") and not message.retain:
            got.append(message.payload)
    return got


def test_the_same_document_live_again_sends_the_last_report_again(mosquitto: Any) -> None:
    inbox: queue.Queue[Inbound] = queue.Queue()
    link = MqttLink(parse_broker_url(mosquitto.url), DEVICE, inbox)
    hub, watcher = Probe(mosquitto.url), Probe(mosquitto.url)
    try:
        link.start()
        assert link.connected.wait(10)
        watcher.subscribe(device_topic(DEVICE, "reported"))
        document = b'{"payload": "the hub\'s signed document"}'
        hub.publish(device_topic(DEVICE, "desired"), document, retain=True)
        assert inbox.get(timeout=10).payload == document
        link.publish_reported({"lastAppliedSequence": 3, "status": {"code": 200}})
        assert len(_reports(watcher, 1.0)) == 1  # the report itself

        hub.publish(device_topic(DEVICE, "desired"), document, retain=True)  # the hub's recovery pass
        assert inbox.get(timeout=10).payload == document
        again = _reports(watcher, 2.0)
        assert len(again) == 1 and b'"lastAppliedSequence": 3' in again[0]

        link.client.reconnect()  # the retained copy a new subscribe brings is no request for the report
        assert inbox.get(timeout=10).payload == document
        assert len(_reports(watcher, 2.0)) == 1  # the link's re-send on connect, nothing more
    finally:
        link.stop()
        hub.close()
        watcher.close()
