"""The direct-method thread: a full queue answers 503 at once; queued calls are answered in order."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from edgeship.agent.guard import ModuleGuard
from edgeship.agent.methods import MethodWorker
from edgeship.agent.runtimes.process import ProcessRuntime
from edgeship.agent.state.store import StateStore


def test_a_full_method_queue_answers_503_and_the_queued_calls_are_answered_in_order(tmp_path: Path) -> None:
    answers: list[tuple[str, dict[str, Any]]] = []
    answered = threading.Event()

    def respond(rid: str, answer: dict[str, Any]) -> None:
        answers.append((rid, answer))
        if len(answers) == 3:
            answered.set()

    worker = MethodWorker(ProcessRuntime(tmp_path / "runtime"), StateStore(tmp_path), ModuleGuard(), respond, limit=2)
    worker.submit("logs", json.dumps({"module": "nope"}).encode(), "r-1")
    worker.submit("restart", b"[]", "r-2")
    worker.submit("logs", b"{}", "r-3")  # the thread is not running yet: the queue is full
    assert answers == [("r-3", answers[0][1])] and answers[0][1]["status"] == 503
    assert "try again later" in answers[0][1]["error"]

    worker.start()
    try:
        assert answered.wait(10)
    finally:
        worker.stop()
    assert [(rid, a["status"]) for rid, a in answers[1:]] == [("r-1", 404), ("r-2", 400)]


def test_a_restart_of_a_module_the_loop_is_applying_answers_409(tmp_path: Path) -> None:
    answers: list[dict[str, Any]] = []
    guard = ModuleGuard()
    with guard.lock:
        guard.mark_applying(["mnist"])
    worker = MethodWorker(ProcessRuntime(tmp_path / "runtime"), StateStore(tmp_path), guard,
                          lambda _rid, answer: answers.append(answer))
    worker.start()
    try:
        worker.submit("restart", b'{"module": "mnist"}', "r-busy")
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert answers[0]["status"] == 409 and "being updated" in answers[0]["error"]
