"""A hub that hears nothing new still renews every device's document before it expires (no freeze)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from hub_workspace import make_hub_workspace

from edgeship.hub.server import HubConfig, HubServer


def test_documents_are_reissued_before_their_expiry_without_any_change(tmp_path: Path, mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "hubws", modules=0)
    config = HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0,
                       document_ttl=timedelta(seconds=4), refresh_interval=0.2)
    with HubServer(config) as hub:
        hub.services.fleet.create_device("dev-1", {"site": "lab"})
        first = hub.services.fleet.get_device("dev-1").desired
        assert first is not None
        deadline = time.monotonic() + 20
        renewed = first
        while renewed.sequence == first.sequence and time.monotonic() < deadline:
            time.sleep(0.1)
            renewed = hub.services.fleet.get_device("dev-1").desired
            assert renewed is not None
        assert renewed.sequence > first.sequence, "no document was re-issued within 20 s"
        assert renewed.expires > first.expires


def test_refresh_sends_nothing_while_documents_are_young(tmp_path: Path, mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "hubws", modules=0)
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        hub.services.fleet.create_device("dev-1", {"site": "lab"})
        assert hub.services.issuing.refresh() == 0
