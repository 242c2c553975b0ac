"""Trust-root rotation end to end: a real Mosquitto, a real ``edgeship agent run``, the test as the hub.

The test publishes trust-root chains retained on ``edgeship/v1/devices/{id}/trust-root``
(``docs/mqtt.md``) and module-less deployment documents on ``desired``, and reads
the agent's reports: ``trustRootVersion``, ``trustRoot.lastError`` and the
document status. No module is installed, so each test takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer

from edgeship.signing import Signer, TrustRoot
from edgeship.signing.trust import sign_trust_root

pytestmark = [pytest.mark.timeout(120), pytest.mark.mosquitto]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    blobs = BlobServer(tmp_path / "served")
    yield AgentWorld(tmp_path / "world", tmp_path / "no-wheelhouse", blobs)
    blobs.close()


@pytest.fixture
def observer(mosquitto: Any) -> Iterator[Observer]:
    obs = Observer(mosquitto.port)
    yield obs
    obs.close()


@pytest.fixture
def agent(world: AgentWorld, mosquitto: Any, tmp_path: Path) -> Iterator[Callable[[str], AgentProcess]]:
    made: list[AgentProcess] = []

    def make(device_id: str) -> AgentProcess:
        world.root.mkdir(parents=True, exist_ok=True)
        process = AgentProcess(world, device_id, mosquitto.url, tmp_path / device_id)
        made.append(process)
        return process.start()

    yield make
    for process in made:
        process.cleanup()


def _root(world: AgentWorld, version: int, *, hub: Signer, roots: list[Signer] | None = None,
          root_threshold: int = 1) -> TrustRoot:
    return TrustRoot.build(
        root=[s.public_key for s in (roots or [world.root_key])], release=[world.release.public_key],
        hub=[hub.public_key], root_threshold=root_threshold, version=version,
    )


def _signed(root: TrustRoot, signers: list[Signer]) -> dict[str, Any]:
    return dict(json.loads(sign_trust_root(root, signers).to_json()))


def _publish_chain(observer: Observer, device_id: str, *envelopes: dict[str, Any]) -> None:
    observer.publish(f"edgeship/v1/devices/{device_id}/trust-root", json.dumps({"chain": list(envelopes)}).encode(),
                     retain=True)


def _trust(version: int, error: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(report: dict[str, Any]) -> bool:
        trust = report.get("trustRoot") or {}
        if report.get("trustRootVersion") != version or trust.get("version") != version:
            return False
        return trust.get("lastError") is None if error is None else error in (trust.get("lastError") or "")

    return check


def _applied(sequence: int, code: int = 200) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["lastAppliedSequence"] == sequence and r["status"]["code"] == code


def test_a_rotation_to_a_new_hub_key_applies_its_documents_and_refuses_the_retired_keys(
    world: AgentWorld, observer: Observer, agent: Callable[[str], AgentProcess]
) -> None:
    dev = "dev-rotate"
    agent(dev)
    observer.desired(dev, world.document(dev, 1, []))
    first = observer.report(dev, _applied(1), timeout=60)
    assert first["trustRootVersion"] == 1 and first["trustRoot"] == {"version": 1, "lastError": None}

    hub2 = Signer.generate(name="hub-2")
    mark = len(observer.messages)
    _publish_chain(observer, dev, _signed(_root(world, 2, hub=hub2), [world.root_key]))
    rotated = observer.report(dev, _trust(2), after=mark, timeout=30)
    assert rotated["status"]["code"] == 200 and rotated["lastAppliedSequence"] == 1

    observer.desired(dev, world.document(dev, 2, [], signer=hub2))
    observer.report(dev, _applied(2), timeout=30)
    observer.desired(dev, world.document(dev, 3, [], signer=world.hub_key))
    retired = observer.report(dev, lambda r: r["status"]["code"] == 401, timeout=30)
    assert retired["lastAppliedSequence"] == 2 and retired["trustRootVersion"] == 2
    assert "no signature is by a trusted hub key" in retired["status"]["message"]


def test_a_document_that_arrived_before_its_trust_root_is_applied_once_the_root_is_in_place(
    world: AgentWorld, observer: Observer, agent: Callable[[str], AgentProcess]
) -> None:
    dev = "dev-early"
    agent(dev)
    hub2 = Signer.generate(name="hub-2")
    observer.desired(dev, world.document(dev, 1, [], signer=hub2))
    observer.report(dev, lambda r: r["status"]["code"] == 401, timeout=60)
    _publish_chain(observer, dev, _signed(_root(world, 2, hub=hub2), [world.root_key]))
    applied = observer.report(dev, _applied(1), timeout=30)
    assert applied["trustRootVersion"] == 2


def test_a_root_not_signed_by_the_current_root_key_is_refused_and_reported(
    world: AgentWorld, observer: Observer, agent: Callable[[str], AgentProcess]
) -> None:
    dev = "dev-stranger"
    agent(dev)
    observer.desired(dev, world.document(dev, 1, []))
    observer.report(dev, _applied(1), timeout=60)
    stranger = Signer.generate(name="stranger")
    _publish_chain(observer, dev, _signed(_root(world, 2, hub=stranger, roots=[stranger]), [stranger]))
    refused = observer.report(dev, _trust(1, "not signed by the current root keys"), timeout=30)
    assert refused["status"]["code"] == 200 and refused["lastAppliedSequence"] == 1
    observer.desired(dev, world.document(dev, 2, [], signer=stranger))
    assert observer.report(dev, lambda r: r["status"]["code"] == 401, timeout=30)["trustRootVersion"] == 1


def test_a_raised_root_threshold_refuses_a_later_rotation_with_one_of_two_signatures(
    world: AgentWorld, observer: Observer, agent: Callable[[str], AgentProcess]
) -> None:
    dev = "dev-threshold"
    agent(dev)
    root2 = Signer.generate(name="root-2")
    hub2 = Signer.generate(name="hub-2")
    both = [world.root_key, root2]
    v2 = _signed(_root(world, 2, hub=world.hub_key, roots=both, root_threshold=2), both)
    v3 = _root(world, 3, hub=hub2, roots=both, root_threshold=2)
    _publish_chain(observer, dev, v2, _signed(v3, [world.root_key]))
    observer.report(dev, _trust(2, "threshold 2"), timeout=60)  # v2 taken, v3 refused in the same message
    _publish_chain(observer, dev, v2, _signed(v3, both))
    observer.report(dev, _trust(3), timeout=30)


def test_a_version_jump_is_refused_unless_the_chain_carries_every_version(
    world: AgentWorld, observer: Observer, agent: Callable[[str], AgentProcess]
) -> None:
    dev = "dev-jump"
    agent(dev)
    hub2 = Signer.generate(name="hub-2")
    v2 = _signed(_root(world, 2, hub=world.hub_key), [world.root_key])
    v3 = _signed(_root(world, 3, hub=hub2), [world.root_key])
    _publish_chain(observer, dev, v3)
    observer.report(dev, _trust(1, "cannot follow version 1"), timeout=60)
    _publish_chain(observer, dev, v2, v3)
    observer.report(dev, _trust(3), timeout=30)


def test_the_rotated_root_survives_an_agent_restart(
    world: AgentWorld, observer: Observer, agent: Callable[[str], AgentProcess]
) -> None:
    dev = "dev-restart"
    process = agent(dev)
    hub2 = Signer.generate(name="hub-2")
    _publish_chain(observer, dev, _signed(_root(world, 2, hub=hub2), [world.root_key]))
    observer.desired(dev, world.document(dev, 1, [], signer=hub2))
    observer.report(dev, lambda r: _trust(2)(r) and _applied(1)(r), timeout=60)
    assert process.stop() == 0
    observer.publish(f"edgeship/v1/devices/{dev}/trust-root", b"", retain=True)  # only the disk copy is left
    mark = len(observer.messages)
    process.start()
    again = observer.report(dev, lambda r: r["trustRootVersion"] == 2, after=mark, timeout=60)
    assert again["lastAppliedSequence"] == 1 and again["status"]["code"] == 200  # the cached hub-2 document verifies
    observer.desired(dev, world.document(dev, 2, [], signer=world.hub_key))
    assert observer.report(dev, lambda r: r["status"]["code"] == 401, timeout=30)["lastAppliedSequence"] == 1
