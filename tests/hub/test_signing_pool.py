"""The signing pool: signatures made on worker processes are the bytes the hub's own signers make."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from edgeship.hub.signing_pool import SigningPool
from edgeship.signing import Signer

MESSAGES = [f"DSSEv1 message {i}".encode() * 20 for i in range(700)]


@pytest.fixture
def pool() -> Iterator[SigningPool]:
    signing = SigningPool(workers=2, min_shared=100)
    yield signing
    signing.close()


def _here(signers: list[Signer], messages: list[bytes]) -> list[list[bytes]]:
    return [[s.sign(m) for s in signers] for m in messages]


def test_a_batch_signed_on_workers_has_the_signatures_the_signers_make(pool: SigningPool) -> None:
    signers = [Signer.generate(name="hub"), Signer.generate(name="hub-2")]
    assert pool.sign(signers, MESSAGES) == _here(signers, MESSAGES)
    assert len(pool.pids) == 2


def test_batches_started_in_a_session_come_back_in_order(pool: SigningPool) -> None:
    signer = Signer.generate(name="hub")
    with pool.session() as session:
        first = session.start([signer], MESSAGES[:400])
        second = session.start([signer], MESSAGES[400:])
        small = session.start([signer], MESSAGES[:3])  # under min_shared: signed at once, here
        assert second.result() == _here([signer], MESSAGES[400:])  # taken first: the first is read before it
        assert first.result() == _here([signer], MESSAGES[:400])
        assert small.result() == _here([signer], MESSAGES[:3])
    assert pool.sign([signer], MESSAGES) == _here([signer], MESSAGES)


def test_answers_not_taken_in_a_session_do_not_reach_the_next_batch(pool: SigningPool) -> None:
    signer = Signer.generate(name="hub")
    with pool.session() as session:
        session.start([signer], MESSAGES[:300])  # never taken
    assert pool.sign([signer], MESSAGES[300:]) == _here([signer], MESSAGES[300:])


def test_a_worker_that_died_costs_only_time(pool: SigningPool) -> None:
    signer = Signer.generate(name="hub")
    assert pool.sign([signer], MESSAGES) == _here([signer], MESSAGES)
    for pid in pool.pids:
        os.kill(pid, signal.SIGKILL)
    assert pool.sign([signer], MESSAGES) == _here([signer], MESSAGES)  # signed here, the workers replaced later
    assert pool.sign([signer], MESSAGES) == _here([signer], MESSAGES)
    assert len(pool.pids) == 2


def test_a_session_while_another_batch_has_the_workers_signs_in_its_own_thread(pool: SigningPool) -> None:
    signer = Signer.generate(name="hub")
    with pool.session() as outer, pool.session() as inner:
        assert outer.held and not inner.held
        assert inner.start([signer], MESSAGES).result() == _here([signer], MESSAGES)
        assert pool.sign([signer], MESSAGES[:300]) == _here([signer], MESSAGES[:300])
