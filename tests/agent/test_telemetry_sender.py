"""The telemetry sender's delivery rule (ADR 0049): PUBACK until the hub is seen to confirm, then keep each batch until
the hub's ``telemetry-stored`` names it, with copies at a doubling interval, and PUBACK again after a long silence.

The publisher here records what the sender hands it and lets each test say when the broker acknowledged a copy;
``test_telemetry_confirmation.py`` runs the same sender through a real broker and hub.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgeship.agent.config import load_config
from edgeship.agent.telemetry.confirm import StoredConfirmations
from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.sender import RESEND_MAX, TelemetrySender
from edgeship.errors import ConfigError


@dataclass
class Copy:
    batch: dict[str, Any]
    acked: bool = False

    def is_published(self) -> bool:
        return self.acked


@dataclass
class Broker:
    """What the sender published, each copy acknowledged when the test says so."""

    copies: list[Copy] = field(default_factory=list)
    online: bool = True

    def publish_telemetry(self, batch: dict[str, Any]) -> Copy | None:
        if not self.online:
            return None
        self.copies.append(Copy(batch))
        return self.copies[-1]

    def ack_all(self) -> None:
        for copy in self.copies:
            copy.acked = True

    def seqs(self, index: int = -1) -> list[int]:
        return [s["seq"] for s in self.copies[index].batch["samples"]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sample(i: int) -> dict[str, Any]:
    return {"time": f"2026-12-06T00:00:{i:02d}Z", "cpuPercent": 1.0, "memoryBytes": 1, "modules": {}}


def _confirm(confirmations: StoredConfirmations, seq: int, refused: str | None = None) -> None:
    message = {"seq": seq} if refused is None else {"seq": seq, "refused": refused}
    assert confirmations.note(json.dumps(message).encode())


def _world(tmp_path: Path, give_up_after: float = 900.0,
           ) -> tuple[TelemetryQueue, StoredConfirmations, Broker, Clock, TelemetrySender]:
    queue, confirmations, broker, clock = TelemetryQueue(tmp_path / "q"), StoredConfirmations(), Broker(), Clock()
    sender = TelemetrySender("dev-1", queue, broker, confirmations, resend_after=30.0, give_up_after=give_up_after,
                             clock=clock)  # fmt: skip
    return queue, confirmations, broker, clock, sender


def test_until_the_hub_confirms_anything_the_brokers_puback_removes_a_batch(tmp_path: Path) -> None:
    queue, _confirmations, broker, _clock, sender = _world(tmp_path)
    queue.push(_sample(1))
    assert sender.pump() == 0 and broker.seqs() == [1]
    assert sender.pump() == 0  # not acknowledged yet: stays, nothing new goes out
    broker.ack_all()
    assert sender.pump() == 1 and len(queue) == 0 and not queue.hub_confirms


def test_once_the_hub_confirms_a_batch_waits_for_its_confirmation_not_the_puback(tmp_path: Path) -> None:
    queue, confirmations, broker, clock, sender = _world(tmp_path)
    queue.push(_sample(1))
    sender.pump()
    _confirm(confirmations, 1)  # an older hub would never send this
    assert sender.pump() == 1 and queue.hub_confirms
    queue.push(_sample(2))
    queue.push(_sample(3))
    sender.pump()
    broker.ack_all()
    clock.now += 29
    assert sender.pump() == 0 and len(queue) == 2, "the broker's PUBACK alone must not remove it any more"
    _confirm(confirmations, 2)  # a confirmation below the batch's last seq is not this batch's
    assert sender.pump() == 0 and len(queue) == 2
    _confirm(confirmations, 3)
    assert sender.pump() == 2 and len(queue) == 0
    assert TelemetryQueue(tmp_path / "q").hub_confirms, "a restarted agent must go on waiting for the hub"


def test_an_unconfirmed_batch_is_sent_again_at_a_doubling_interval_with_the_same_samples(tmp_path: Path) -> None:
    queue, confirmations, broker, clock, sender = _world(tmp_path, give_up_after=5000)
    queue.set_hub_confirms(True)
    for i in range(1, 4):
        queue.push(_sample(i))
    sender.pump()
    first = broker.copies[0].batch
    clock.now += 60
    assert sender.pump() == 0 and len(broker.copies) == 1, "no copy while the broker has not taken the first one"
    broker.ack_all()
    waits = []
    for _ in range(6):
        before = len(broker.copies)
        waited = 0
        while len(broker.copies) == before:
            assert waited < 1000 and len(queue) == 3, "the sender stopped sending copies"
            clock.now += 1
            waited += 1
            sender.pump()
        broker.ack_all()
        waits.append(waited)
    assert waits == [1, 60, 120, 240, RESEND_MAX, RESEND_MAX]  # the first was overdue already (60 s > 30 s)
    assert all(c.batch == first for c in broker.copies) and sender.copies == 6
    _confirm(confirmations, 3)
    assert sender.pump() == 3 and len(queue) == 0


def test_no_copy_goes_out_while_the_link_is_down_and_one_goes_when_it_is_back(tmp_path: Path) -> None:
    queue, _confirmations, broker, clock, sender = _world(tmp_path)
    queue.set_hub_confirms(True)
    queue.push(_sample(1))
    sender.pump()
    broker.ack_all()
    broker.online = False
    clock.now += 100
    sender.pump()
    assert len(broker.copies) == 1 and sender.copies == 0
    broker.online = True
    sender.pump()
    assert len(broker.copies) == 2 and sender.copies == 1


def test_a_hub_silent_past_give_up_after_lets_the_puback_count_until_it_confirms_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue, confirmations, broker, clock, sender = _world(tmp_path)
    queue.set_hub_confirms(True)
    queue.push(_sample(1))
    sender.pump()
    broker.ack_all()
    with caplog.at_level(logging.WARNING, logger="edgeship.agent"):
        while len(queue):
            clock.now += 10
            sender.pump()
            broker.ack_all()
            assert clock.now < 1000 + 910, "the sender never gave up on the hub"
    assert clock.now >= 1000 + 900 and not queue.hub_confirms
    assert "has not confirmed telemetry samples up to 1 for 900 s" in caplog.text
    queue.push(_sample(2))
    sender.pump()
    broker.ack_all()
    assert sender.pump() == 1, "while the hub is silent the PUBACK removes a batch"
    _confirm(confirmations, 1)  # the hub is back and confirms the copies it got meanwhile
    queue.push(_sample(3))
    sender.pump()
    broker.ack_all()
    assert sender.pump() == 0 and queue.hub_confirms, "a new confirmation must turn waiting for the hub back on"


def test_a_batch_the_hub_refused_for_its_content_is_dropped_with_the_hubs_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue, confirmations, _broker, _clock, sender = _world(tmp_path)
    queue.set_hub_confirms(True)
    queue.push(_sample(1))
    queue.push(_sample(2))
    sender.pump()
    _confirm(confirmations, 2, refused="Telemetry batch field samples.0.cpuPercent: too large.")
    with caplog.at_level(logging.WARNING, logger="edgeship.agent"):
        assert sender.pump() == 2
    assert "the hub refused telemetry samples 1-2: Telemetry batch field samples.0.cpuPercent" in caplog.text


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"[]", b'{"seq": 0}', b'{"seq": -3}', b'{"seq": "5"}', b'{"seq": true}', b'{"seq": 1.5}',
    b'{"seq": 5, "refused": 7}', b'{"seq": 99999999999999999999}', b'{"seq": 5, "pad": "' + b"x" * 5000 + b'"}',
])  # fmt: skip
def test_a_confirmation_that_is_not_seq_n_changes_nothing(payload: bytes) -> None:
    confirmations = StoredConfirmations()
    assert not confirmations.note(payload)
    assert (confirmations.seq, confirmations.count) == (0, 0)


def test_confirmations_keep_the_highest_seq_and_a_refusal_only_for_its_own_seq() -> None:
    confirmations = StoredConfirmations()
    _confirm(confirmations, 7)
    _confirm(confirmations, 5, refused="bad")  # a late one for an older batch
    assert confirmations.seq == 7 and confirmations.count == 2
    assert confirmations.refusal(5) == "bad" and confirmations.refusal(7) is None


def test_the_sender_checks_its_settings(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "q")
    with pytest.raises(ValueError, match="resend_after"):
        TelemetrySender("dev-1", queue, Broker(), StoredConfirmations(), resend_after=0)
    with pytest.raises(ValueError, match="at most give_up_after"):
        TelemetrySender("dev-1", queue, Broker(), StoredConfirmations(), resend_after=60, give_up_after=30)


@pytest.mark.parametrize(("value", "message"), [
    ("0", "must be a positive number of seconds"), ('"soon"', "must be a positive number of seconds"),
    ("901", "must be at most 900 seconds"),
])  # fmt: skip
def test_agent_toml_checks_telemetry_resend_after(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'device_id = "dev-1"\nhub_url = "http://h"\ntrust_root = "t.json"\ndata_dir = "d"\n'
                    f'telemetry_resend_after = {value}\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=f"telemetry_resend_after {message}"):
        load_config(path)
    path.write_text(path.read_text().replace(f"telemetry_resend_after = {value}", "telemetry_resend_after = 5"))
    assert load_config(path).telemetry_resend_after == 5.0
