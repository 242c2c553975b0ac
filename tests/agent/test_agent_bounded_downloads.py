"""Bounded downloads end to end (ADR 0018): a real Mosquitto, a misbehaving HTTP blob host, real agents.

One fault per test, each the headline of issue 13: a host sending endless data (the
disk stays bounded, the device reports 500 with the reason), a host trickling a byte
at a time (a newer document is applied while the slow download is cancelled), and a
disk too full for the update (refused with a report, nothing downloaded). The modules'
bundles are signed blobs that are never installed, so no venv is built here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer

from edgeship.signing import Signer, TrustRoot
from edgeship.signing.trust import sign_trust_root

pytestmark = [pytest.mark.timeout(300), pytest.mark.mosquitto]

BUNDLE = os.urandom(20 * 1024)  # the 20 KB bundle of the issue


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    blobs = BlobServer(tmp_path / "served")
    (tmp_path / "world").mkdir()
    yield AgentWorld(tmp_path / "world", tmp_path / "no-wheelhouse", blobs)
    blobs.close()


@pytest.fixture
def observer(mosquitto: Any) -> Iterator[Observer]:
    obs = Observer(mosquitto.port)
    yield obs
    obs.close()


@pytest.fixture
def agents(world: AgentWorld, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(device_id: str, broker_url: str, **settings: Any) -> AgentProcess:
        agent = AgentProcess(world, device_id, broker_url, tmp_path / device_id, **settings)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.cleanup()


def _bytes_under(root: Path) -> int:
    total = 0
    for path in root.rglob("*") if root.exists() else ():
        with contextlib.suppress(FileNotFoundError):  # deleted by the agent while we walked
            total += path.stat().st_size if path.is_file() else 0
    return total


def _sizes_until_empty(root: Path, timeout: float) -> list[int]:
    """Bytes under ``root`` sampled every 10 ms until it holds none (or ``timeout`` passes)."""
    seen = [_bytes_under(root)]
    deadline = time.monotonic() + timeout
    while seen[-1] and time.monotonic() < deadline:
        time.sleep(0.01)
        seen.append(_bytes_under(root))
    return seen


def _reports(observer: Observer, device_id: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in observer.payloads(f"{device_id}/reported") if p]


def test_an_endless_blob_host_fills_no_disk_and_the_device_reports_500(
    world: AgentWorld, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-endless"
    module = world.blob_module("endless", BUNDLE)
    world.blobs.misbehave(module.bundle_digest, "endless")
    agent = agents(dev, mosquitto.url).start()
    observer.desired(dev, world.document(dev, 1, [module]))

    failed = observer.report(dev, lambda r: r["status"]["code"] == 500 and r["lastAppliedSequence"] == 1)
    error = failed["modules"]["endless"]["lastError"]
    assert "download of endless.a failed" in error and f"sent more than the {len(BUNDLE)} bytes expected" in error
    assert "partial download was deleted" in error
    # The cool-off retries it; each try is cut off the same way and nothing accumulates.
    world.blobs.wait(lambda: len(world.blobs.hangups) >= 2, timeout=120)
    # The host sees the hang-up a moment before the agent deletes the partial, and the next try
    # may be writing one: the disk never holds more than the signed size, and empties between tries.
    blobs = agent.data_dir / "blobs"
    seen = _sizes_until_empty(blobs, timeout=60)
    assert seen[-1] == 0, sorted(blobs.rglob("*"))
    assert max(seen) <= len(BUNDLE), seen
    assert sum(sent for _path, sent in world.blobs.hangups) > 2 * len(BUNDLE)  # the host did push more
    assert agent.stop() == 0


def test_a_newer_document_is_applied_while_a_slow_host_trickles_and_the_slow_download_is_cancelled(
    world: AgentWorld, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-trickle"
    slow = world.blob_module("slow", BUNDLE)
    world.blobs.misbehave(slow.bundle_digest, "trickle")  # one byte every 0.2 s: ~28 hours for 20 KB
    path = f"/blobs/{slow.bundle_digest}"
    # Limits the trickle satisfies (1 byte/s over 60 s), so only a newer document can end this download.
    agent = agents(dev, mosquitto.url, download_min_rate=1, download_rate_window=60).start()
    first = world.document(dev, 1, [slow])
    observer.desired(dev, first)
    world.blobs.wait(lambda: world.blobs.sent.get(path, 0) >= 3)  # the download is under way

    # The same document again (as every reconnect delivers it) leaves the download alone; a direct
    # method is answered meanwhile (methods have their own thread; paho hands them on in order, so
    # the answer also means the repeated document was seen).
    observer.desired(dev, first)
    answer = observer.call(dev, "logs", {"module": "slow"}, "r-logs")
    assert answer["status"] == 404 and "runs no module" in answer["error"]
    more = world.blobs.sent[path] + 3
    world.blobs.wait(lambda: world.blobs.sent.get(path, 0) >= more)  # the same transfer goes on (a cancelled
    assert world.blobs.hangups == [] and "stopped applying" not in agent.log()  # one is a hang-up by now)

    mark = len(observer.messages)
    observer.desired(dev, world.document(dev, 2, []))  # the operator withdraws the module
    applied = observer.report(dev, lambda r: r["lastAppliedSequence"] == 2, after=mark)
    assert applied["status"]["code"] == 200 and applied["modules"] == {}
    assert path in [p for p, _sent in world.blobs.hangups]  # the agent hung up on the slow host
    # No pass reported the slow download as failed: it was superseded, not timed out.
    assert not [r for r in _reports(observer, dev) if r["status"]["code"] == 500]
    assert (
        "stopped applying sequence 1 (download of slow.a stopped: a newer desired message arrived; "
        "the bytes received are kept for a resume)" in agent.log()
    )
    kept = (agent.data_dir / "blobs" / "partial" / f"{slow.bundle_digest.removeprefix('sha256:')}.part")
    have = kept.stat().st_size
    assert 0 < have < len(BUNDLE)  # its bytes are kept for a resume

    # Wanted again: the download resumes where it stopped.
    requests = len(world.blobs.requests)
    observer.desired(dev, world.document(dev, 3, [slow]))
    world.blobs.wait(lambda: len(world.blobs.requests) > requests)
    assert world.blobs.requests[requests] == (path, f"bytes={have}-")
    assert agent.stop() == 0  # stopping cancels the trickling download too (else this waits for hours)
    assert "stopped applying sequence 3 (download of slow.a stopped: the agent is stopping" in agent.log()


def test_a_trust_root_rotation_is_applied_while_a_slow_host_trickles_and_the_download_then_resumes(
    world: AgentWorld, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-rotate"
    slow = world.blob_module("slow", BUNDLE)
    world.blobs.misbehave(slow.bundle_digest, "trickle")
    path = f"/blobs/{slow.bundle_digest}"
    agent = agents(dev, mosquitto.url, download_min_rate=1, download_rate_window=60).start()
    observer.desired(dev, world.document(dev, 1, [slow]))
    world.blobs.wait(lambda: world.blobs.sent.get(path, 0) >= 3)

    new_hub = Signer.generate(name="hub-2")
    root = TrustRoot.build(root=[world.root_key.public_key], release=[world.release.public_key],
                           hub=[new_hub.public_key], version=2)
    chain = {"chain": [json.loads(sign_trust_root(root, [world.root_key]).to_json())]}
    observer.publish(f"edgeship/v1/devices/{dev}/trust-root", json.dumps(chain).encode(), retain=True)

    # Document 1 still wants the blob: after the rotation, the download resumes where it stopped.
    world.blobs.wait(lambda: len([r for r in world.blobs.requests if r[0] == path]) >= 2)
    assert path in [p for p, _sent in world.blobs.hangups]  # the trickling download gave way to the rotation
    resumed = [rng for p, rng in world.blobs.requests if p == path][1]
    assert resumed is not None and resumed.startswith("bytes=") and resumed != "bytes=0-"
    log = agent.log()
    stopped = log.index("stopped applying sequence 1 (download of slow.a stopped: a newer trust-root message arrived")
    rotated = log.index("trust root rotated to version 2")
    again = log.index("download slow.a", stopped)
    assert stopped < rotated < again  # handled at once, between the two halves of the download
    assert agent.stop() == 0
    # (The next report, with trustRootVersion 2, follows that pass: it waits for the trickle.)


def test_a_disk_too_full_for_the_update_is_refused_before_anything_is_downloaded(
    world: AgentWorld, mosquitto: Any, observer: Observer, agents: Callable[..., AgentProcess]
) -> None:
    dev = "dev-full"
    module = world.blob_module("big", BUNDLE)
    free = os.statvfs(world.root).f_bavail * os.statvfs(world.root).f_frsize
    agent = agents(dev, mosquitto.url, min_free_bytes=free + 2**40).start()  # more than this disk will ever have
    observer.desired(dev, world.document(dev, 1, [module]))

    refused = observer.report(dev, lambda r: r["status"]["code"] == 500 and r["lastAppliedSequence"] == 1)
    error = refused["modules"]["big"]["lastError"]
    assert "check_space of big.a failed: Not enough disk space for big.a" in error
    assert "20.0 KiB to download" in error and "must stay free (min_free_bytes)" in error and "are free on" in error
    assert "Nothing was downloaded" in error
    assert refused["modules"]["big"]["status"] == "failed"
    assert world.blobs.requests == []
    assert _bytes_under(agent.data_dir / "blobs") == 0
    assert agent.stop() == 0
