"""A broker node's loss can leave an older document retained (ADR 0044): the agent refuses it as a replay, and the
document it applies, sent again by the hub, clears that refusal, so its report says 200 again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from parts import port_block
from parts_world import Device, Keys

from edgeship.agent.runtimes.process import ProcessRuntime
from edgeship.deployment import build_document, sign_document


def _document(keys: Keys, sequence: int) -> bytes:
    doc = build_document(device_id="dev-1", sequence=sequence, modules={}, issued_at=datetime.now(timezone.utc),
                         ttl=timedelta(days=1))  # fmt: skip
    return sign_document(doc, [keys.hub]).to_json().encode()


def test_the_applied_document_again_after_an_older_refused_one_reports_200(tmp_path: Path) -> None:
    keys = Keys()
    device = Device(tmp_path / "data", "http://127.0.0.1:9", keys, ProcessRuntime(tmp_path / "runtime"),
                    ports=(first := port_block(10), first + 9))  # fmt: skip
    reconciler = device.reconciler
    older, newest = _document(keys, 1), _document(keys, 2)
    assert reconciler.offer(older) and reconciler.reconcile() is not None
    assert reconciler.offer(newest)
    assert reconciler.reconcile()["status"]["code"] == 200  # type: ignore[index]

    assert reconciler.offer(older)  # the retained copy a node's loss left behind, after a failover
    refused = reconciler.reconcile()
    assert refused is not None and refused["status"]["code"] == 409 and refused["lastAppliedSequence"] == 2

    assert reconciler.offer(newest)  # the hub sends its newest again
    report = reconciler.reconcile()
    assert report is not None and report["status"]["code"] == 200 and report["lastAppliedSequence"] == 2
    assert not reconciler.offer(newest)  # and once in step, the same bytes change nothing
