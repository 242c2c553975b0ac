"""The hub's side of trust-root rotation, without a broker: checks, files, publish order, re-signing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hub_world import HubWorld
from memory_link import MemoryLink, SlowLink

from edgeship.agent.decide import accept_document
from edgeship.agent.trust import apply_chain
from edgeship.errors import InputError, SignatureError, TrustRootError
from edgeship.hub.services import DeviceLink, HubServices
from edgeship.hub.trust import TrustRootFiles
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope
from edgeship.signing.trust import sign_trust_root


@pytest.fixture
def world(tmp_path: Path) -> HubWorld:
    return HubWorld(tmp_path)


@pytest.fixture
def recorder() -> MemoryLink:
    """What the services sent towards devices, in order."""
    return MemoryLink()


@pytest.fixture
def hub2() -> Signer:
    return Signer.generate(name="hub-2")


@pytest.fixture
def hub(world: HubWorld, tmp_path: Path, recorder: MemoryLink, hub2: Signer) -> HubServices:
    return _hub(world, tmp_path, recorder, hub2)


def _hub(world: HubWorld, tmp_path: Path, link: DeviceLink, hub2: Signer) -> HubServices:
    """A hub that keeps trust-root files and holds both hub keys, with devices dev-1 and dev-2."""
    (tmp_path / "trust-root.json").write_text(sign_trust_root(world.trust_root(), [world.root_key]).to_json())
    service = world.services(f"sqlite:///{tmp_path / 'hub.db'}", link=link,
                             trust_files=TrustRootFiles(tmp_path / "trust-root.json", tmp_path / "trust-roots"),
                             hub_keys=lambda: [world.hub_key, hub2])
    for device_id in ("dev-1", "dev-2"):
        service.fleet.create_device(device_id)
    return service


def _root(world: HubWorld, version: int, hub: Signer) -> TrustRoot:
    return TrustRoot.build(root=[world.root_key.public_key], release=[world.release.public_key],
                           hub=[hub.public_key], version=version)


def _envelope(root: TrustRoot, signers: list[Signer]) -> bytes:
    return sign_trust_root(root, signers).to_json().encode()


def test_a_rotation_to_a_new_hub_key_publishes_the_chain_first_then_re_signs_every_document(
    world: HubWorld, hub: HubServices, recorder: MemoryLink, hub2: Signer, tmp_path: Path
) -> None:
    recorder.events.clear()
    v1 = hub.trust.trust_root
    new = hub.trust.rotate_trust_root(_envelope(_root(world, 2, hub2), [world.root_key]))
    assert new.version == 2 and [s.keyid for s in hub.trust.signers] == [hub2.keyid]
    kinds = [kind for kind, _device, _payload in recorder.events]
    assert kinds == ["trust-root", "trust-root", "desired", "desired"]
    message = recorder.events[0][2]
    rotated = apply_chain(v1, message, datetime.now(timezone.utc))
    assert rotated.error is None and rotated.root.version == 2
    for _kind, device_id, envelope in recorder.events[2:]:
        accepted = accept_document(envelope, rotated.root, device_id, 1, datetime.now(timezone.utc))
        assert accepted.sequence == 2
    assert (tmp_path / "trust-roots" / "v2.json").is_file()
    assert hub.trust.trust_root_message() == message


def test_a_release_key_rotation_keeps_the_hub_key_and_re_signs_nothing(
    world: HubWorld, hub: HubServices, recorder: MemoryLink
) -> None:
    recorder.events.clear()
    hub.trust.rotate_trust_root(_envelope(_root(world, 2, world.hub_key), [world.root_key]))
    assert [kind for kind, _d, _p in recorder.events] == ["trust-root", "trust-root"]
    assert [s.keyid for s in hub.trust.signers] == [world.hub_key.keyid]


def test_a_new_device_gets_the_chain_before_its_first_document(
    world: HubWorld, hub: HubServices, recorder: MemoryLink, hub2: Signer
) -> None:
    hub.trust.rotate_trust_root(_envelope(_root(world, 2, hub2), [world.root_key]))
    recorder.events.clear()
    hub.fleet.create_device("dev-3")
    assert [(kind, device) for kind, device, _p in recorder.events] == [("trust-root", "dev-3"), ("desired", "dev-3")]


@pytest.mark.parametrize("case", ["stranger", "jump", "same-version", "unheld-hub-key", "not-a-root"])
def test_a_rotation_devices_would_refuse_is_refused_before_anything_is_written(
    world: HubWorld, hub: HubServices, recorder: MemoryLink, hub2: Signer, tmp_path: Path, case: str
) -> None:
    stranger = Signer.generate(name="stranger")
    envelope = {
        "stranger": lambda: _envelope(_root(world, 2, hub2), [stranger]),
        "jump": lambda: _envelope(_root(world, 3, hub2), [world.root_key]),
        "same-version": lambda: _envelope(_root(world, 1, hub2), [world.root_key]),
        "unheld-hub-key": lambda: _envelope(_root(world, 2, stranger), [world.root_key]),
        "not-a-root": lambda: sign_envelope(b"{}", DEPLOYMENT_PAYLOAD_TYPE, [world.root_key]).to_json().encode(),
    }[case]()
    recorder.events.clear()
    before = (tmp_path / "trust-root.json").read_bytes()
    with pytest.raises(SignatureError) as refused:
        hub.trust.rotate_trust_root(envelope)
    assert isinstance(refused.value, (TrustRootError, SignatureError)) and str(refused.value).endswith(".")
    assert hub.trust.trust_root.version == 1 and [s.keyid for s in hub.trust.signers] == [world.hub_key.keyid]
    assert recorder.events == [] and (tmp_path / "trust-root.json").read_bytes() == before
    assert not (tmp_path / "trust-roots").exists()


def test_a_hub_without_trust_files_cannot_rotate(world: HubWorld, tmp_path: Path, hub2: Signer) -> None:
    service = world.services(f"sqlite:///{tmp_path / 'bare.db'}")
    with pytest.raises(InputError, match="cannot rotate"):
        service.trust.rotate_trust_root(_envelope(_root(world, 2, hub2), [world.root_key]))


@pytest.mark.mosquitto
def test_the_bridge_sends_the_chain_before_the_documents_and_again_on_connect(
    world: HubWorld, tmp_path: Path, hub2: Signer, mosquitto: Any
) -> None:
    from mqtt_probe import Probe

    from edgeship.hub.bridge import MqttBridge
    from edgeship.mqtt import device_topic, parse_broker_url

    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    files = TrustRootFiles(tmp_path / "trust-root.json", tmp_path / "trust-roots")
    first = MqttBridge(parse_broker_url(mosquitto.url))
    service = world.services(url, link=first, trust_files=files, hub_keys=lambda: [hub2])
    (tmp_path / "trust-root.json").write_text(sign_trust_root(world.trust_root(), [world.root_key]).to_json())
    first.start(service)
    probe = Probe(mosquitto.url)
    try:
        service.fleet.create_device("dev-1")
        probe.subscribe("edgeship/v1/devices/dev-1/#")
        probe.expect(device_topic("dev-1", "desired"))
        service.trust.rotate_trust_root(_envelope(_root(world, 2, hub2), [world.root_key]))
        received = probe.expect()
        assert received.topic == device_topic("dev-1", "trust-root")
        assert probe.expect().topic == device_topic("dev-1", "desired")  # after the chain
        chain = received.payload
        first.stop()
        for channel in ("trust-root", "desired"):  # a broker that lost its retained messages
            probe.publish(device_topic("dev-1", channel), b"", retain=True)
        probe.close()

        second = MqttBridge(parse_broker_url(mosquitto.url))  # the hub restarted, with the root it rotated to
        restarted = world.services(url, link=second, trust_root=service.trust.trust_root, trust_files=files,
                                   hub_keys=lambda: [hub2])
        second.start(restarted)  # returns once it re-published on connect
        try:
            probe = Probe(mosquitto.url)
            probe.subscribe(device_topic("dev-1", "trust-root"))
            assert probe.expect().payload == chain
            rotated = apply_chain(world.trust_root(), chain, datetime.now(timezone.utc)).root
            probe.subscribe(device_topic("dev-1", "desired"))
            envelope = probe.expect().payload
            assert accept_document(envelope, rotated, "dev-1", 1, datetime.now(timezone.utc)).sequence == 2
        finally:
            second.stop()
    finally:
        probe.close()


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("second_hub_key", ["same-envelope", "another-v2"])
def test_two_concurrent_rotations_one_wins_and_the_files_and_chain_agree(
    world: HubWorld, hub2: Signer, tmp_path: Path, second_hub_key: str
) -> None:
    slow = SlowLink()  # sends the chain slowly, so the first rotation still runs when the second starts
    hub = _hub(world, tmp_path, slow, hub2)
    first = _envelope(_root(world, 2, hub2), [world.root_key])
    second = first if second_hub_key == "same-envelope" else _envelope(_root(world, 2, world.hub_key), [world.root_key])
    results = _race(partial(hub.trust.rotate_trust_root, first), partial(hub.trust.rotate_trust_root, second))
    won = [r for r in results if isinstance(r, TrustRoot)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], TrustRootError) and "already version 2" in str(refused[0])
    winner = first if results[0] is won[0] else second
    assert (tmp_path / "trust-root.json").read_bytes() == winner
    assert sorted(p.name for p in (tmp_path / "trust-roots").iterdir()) == ["v2.json"]
    assert (tmp_path / "trust-roots" / "v2.json").read_bytes() == winner
    assert hub.trust.trust_root.version == 2 and hub.trust.trust_root_message() is not None
    published = [payload for kind, _d, payload in slow.events if kind == "trust-root"]
    assert len(published) == 2 and set(published) == {hub.trust.trust_root_message()}  # once per device, one chain
    expected = hub2 if winner == first else world.hub_key
    assert [s.keyid for s in hub.trust.signers] == [expected.keyid]


def test_a_re_evaluation_racing_a_rotation_signs_with_the_key_devices_will_hold(
    world: HubWorld, hub2: Signer, tmp_path: Path
) -> None:
    slow = SlowLink()  # sends the chain slowly, so the re-evaluation starts while the rotation runs
    hub = _hub(world, tmp_path, slow, hub2)
    envelope = _envelope(_root(world, 2, hub2), [world.root_key])
    results = _race(partial(hub.trust.rotate_trust_root, envelope),
                    lambda: (time.sleep(0.05), hub.fleet.update_tags("dev-1", {"site": "lab"}))[1])
    assert not any(isinstance(r, Exception) for r in results), results
    rotated = apply_chain(world.trust_root(), hub.trust.trust_root_message() or b"", datetime.now(timezone.utc)).root
    for device_id in ("dev-1", "dev-2"):
        newest = hub.store.latest_desired([device_id])[device_id]
        accepted = accept_document(newest.envelope.encode(), rotated, device_id, 1, datetime.now(timezone.utc))
        assert accepted.sequence >= 2
