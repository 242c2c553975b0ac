"""The fleet benchmark's device simulator is honest: it applies the hub's documents and refuses forged ones.

50 simulated devices (one epoll loop) against a real Mosquitto and the hub's
MQTT bridge; no timing is asserted here (``benchmarks/fleet`` measures speed).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hub_world import HubWorld

from edgeship.deployment import build_document, sign_document
from edgeship.hub.bridge import MqttBridge
from edgeship.hub.services import HubServices, ModuleRefSpec
from edgeship.mqtt import device_topic, parse_broker_url
from edgeship.signing import Signer

SIMULATOR = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet" / "simulator.py"
DEVICES = 50


def _load_simulator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_simulator", SIMULATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_simulator"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hub(tmp_path: Path, mosquitto: Any) -> Iterator[tuple[HubWorld, HubServices]]:
    world = HubWorld(tmp_path / "hub")
    world.root.mkdir(parents=True)
    bridge = MqttBridge(parse_broker_url(mosquitto.url))
    service = world.services(f"sqlite:///{world.root / 'hub.db'}", link=bridge)
    bridge.start(service)
    yield world, service
    bridge.stop()


def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_simulated_devices_apply_a_deployment_and_refuse_a_document_from_an_unknown_key(
    hub: tuple[HubWorld, HubServices], mosquitto: Any
) -> None:
    world, service = hub
    simulator = _load_simulator()
    ids = simulator.device_ids("sim-", 0, DEVICES)
    service.catalog.upload_module(world.module("digits", 1))
    service.fleet.create_devices([(device_id, {"fleet": "sim"}) for device_id in ids])
    fleet = simulator.Fleet(mosquitto.url, ids, world.trust_root())
    fleet.connect(timeout=20)
    assert fleet.run_until(lambda: fleet.counts["applied"] == DEVICES, 10)  # each device's first document
    stop = threading.Event()
    loop = threading.Thread(target=lambda: fleet.run_until(stop.is_set, 60))
    loop.start()
    try:
        service.deployments.create_deployment("sim", "tags.fleet = 'sim'", [ModuleRefSpec("digits", 1, {"port": 5001})])
        assert _eventually(lambda: service.deployments.deployment_status("sim").reporting_success == DEVICES)
        reported = service.fleet.get_device(ids[0]).reported
        assert reported is not None and reported.state["modules"]["digits"]["port"] == 5001

        # Signed by a key the trust root does not name: refused (401), the last applied sequence kept.
        victim = ids[7]
        desired = service.fleet.get_device(victim).desired
        assert desired is not None
        forged = build_document(device_id=victim, sequence=desired.sequence + 1, modules={},
                                issued_at=service.clock())
        envelope = sign_document(forged, [Signer.generate(name="stranger")]).to_json().encode()
        _publish(mosquitto.url, device_topic(victim, "desired"), envelope)
        state = _eventually(
            lambda: _reported_code(service, victim) == 401 and service.fleet.get_device(victim).reported
        )
        assert state, "the forged document was not refused"
        assert state.state["lastAppliedSequence"] == desired.sequence
        assert service.deployments.deployment_status("sim").reporting_failure == 1  # the hub shows the device's refusal
    finally:
        stop.set()
        loop.join(10)
    device = next(d for d in fleet.devices if d.device_id == victim)
    assert (device.last_applied, device.last_code) == (desired.sequence, 401)
    assert fleet.counts["refused:401"] == 1 and fleet.counts["applied"] == 2 * DEVICES
    fleet.disconnect()
    fleet.close()


def _reported_code(service: HubServices, device_id: str) -> int | None:
    reported = service.fleet.get_device(device_id).reported
    return reported.state["status"]["code"] if reported is not None else None


def _publish(url: str, topic: str, payload: bytes) -> None:
    from edgeship.mqtt.client import make_client

    settings = parse_broker_url(url)
    client = make_client(settings, "forger", persistent=False)
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
