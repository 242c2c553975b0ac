"""The rollout benchmark's probes: hub-side logs with ``time.time()`` stamps, the engine's call meter, and the
abort rule replayed over the reports as the hub received them (``run.py`` drives them; ``README.md`` says where
each time is taken).

Observation only: each wraps a method of the running hub (the bridge subscriber's ``on_message``, the
publisher's hand-off to paho, paho's PUBACK handler, the engine's pass) and calls the original.
"""

from __future__ import annotations

import base64
import bisect
import collections
import cProfile
import io
import json
import pstats
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import paho.mqtt.client as paho

from edgeship.hub.bridge import MqttBridge, Subscriber
from edgeship.mqtt import DeviceTopic, parse_device_topic

__all__ = ["ENGINE_METHODS", "FINAL", "MODULE", "EngineMeter", "Probe", "document_facts", "find_trip"]

MODULE = "digits"  # the module whose release is watched
FINAL = ("aborted", "completed", "waiting-approval")  # rollout states that end the wait for a decision
# the engine's methods timed when present: its pass, one rollout's step, and the step's parts; the reading of
# progress is on the engine itself (before 3d3fbf7) or on its ProgressReader (``engine.progress``), labelled alike
ENGINE_METHODS = ("tick", "_step", "_progress", "_abort", "_advance", "_pins", "_expected")
READER_METHODS = {"read": "_progress", "expected": "_expected", "pins": "_pins", "fallbacks": "_fallbacks"}


class Probe:
    """Hub-side logs with ``time.time()`` stamps (comparable with the simulators' own):
    every report the bridge received, every document handed to paho (with its mid) and every PUBACK."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, bytes]] = []
        self.published: list[tuple[float, str, bytes, int]] = []
        self.acks: list[tuple[float, int]] = []
        self.stored: list[tuple[float, frozenset[str]]] = []  # when the fleet service committed a report batch
        self.decisions: list[tuple[float, str, str, dict[str, int]]] = []  # the engine's decide() calls

    def reset(self) -> None:
        self.reports, self.published, self.acks, self.stored, self.decisions = [], [], [], [], []

    def stored_at(self, device_id: str, after: float) -> float | None:
        return next((t for t, ids in self.stored if t >= after and device_id in ids), None)

    def watch_decisions(self) -> None:
        """Note every ``decide`` the engine makes (its module's name for the pure function), with outcome counts."""
        from edgeship.hub.services import rollouts as engine_module

        decide = engine_module.decide

        def noted(*args: Any, **kwargs: Any) -> Any:
            decision = decide(*args, **kwargs)
            outcomes = args[3] if len(args) > 3 else kwargs.get("outcomes", {})
            self.decisions.append((time.time(), decision.action, decision.reason,
                                   dict(collections.Counter(outcomes.values()))))
            return decision

        engine_module.decide = noted  # type: ignore[assignment]

    def attach(self, bridge: MqttBridge, subscriber: Subscriber) -> None:
        inbound = subscriber.on_message

        def on_message(topic: DeviceTopic, payload: bytes) -> None:
            if topic.channel == "reported":
                self.reports.append((time.time(), topic.device_id, payload))
            inbound(topic, payload)

        subscriber.on_message = on_message  # type: ignore[method-assign]
        client = bridge.client
        publish = client.publish

        def publish_and_note(topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                             properties: Any = None) -> paho.MQTTMessageInfo:
            started = time.time()  # before paho may send it: its PUBACK is later than this
            info = publish(topic, payload, qos, retain, properties)
            if topic.endswith("/desired") and payload:
                parsed = parse_device_topic(topic)
                if parsed is not None:
                    self.published.append((started, parsed.device_id, bytes(payload), info.mid))
            return info

        client.publish = publish_and_note  # type: ignore[method-assign]  # the publisher reads it per batch
        packets = getattr(bridge.publisher, "_packets", None)
        if packets is not None:
            self._note_packets(client, packets)
        # every PUBACK, in paho's packet handler: paho's on_publish never sees those of the pre-encoded packets
        handle = client._handle_pubackcomp

        def noted(command: Any) -> Any:
            packet = client._in_packet.get("packet") or b""
            if command == "PUBACK" and len(packet) >= 2:
                self.acks.append((time.time(), int.from_bytes(packet[:2], "big")))
            return handle(command)

        client._handle_pubackcomp = noted  # type: ignore[method-assign]

    def _note_packets(self, client: paho.Client, packets: Any) -> None:
        """The publisher's fast path (``bridge/packets.py``: documents as pre-encoded PUBLISH packets on paho's
        queue): note each document with the packet id ``send`` drew for it, in order."""
        send = packets.send

        def send_and_note(documents: Any) -> None:
            mids: list[int] = []
            generate = client._mid_generate
            me = threading.get_ident()

            def drawn() -> int:
                mid = generate()
                if threading.get_ident() == me:
                    mids.append(mid)
                return mid

            started = time.time()
            client._mid_generate = drawn  # type: ignore[method-assign]
            try:
                send(documents)
            finally:
                del client._mid_generate  # the class's method again
            for doc, mid in zip(documents, mids, strict=True):
                self.published.append((started, doc.device_id, bytes(doc.envelope), mid))

        packets.send = send_and_note

    def ack_time(self, mid: int, after: float) -> float | None:
        """The first PUBACK of ``mid`` at or after ``after`` (paho reuses mids past 65,535)."""
        times = sorted(t for t, m in self.acks if m == mid)
        at = bisect.bisect_left(times, after)
        return times[at] if at < len(times) else None


def document_facts(envelope: bytes) -> tuple[int, int | None]:
    """A document's sequence and the version of ``MODULE`` it names (None: none), read without verifying."""
    document = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    entry = (document.get("modules") or {}).get(MODULE)
    version = None if entry is None else json.loads(base64.b64decode(entry["module"]["payload"])).get("version")
    return int(document["sequence"]), version


class EngineMeter:
    """Wraps the rollout engine's tick-like methods: calls, wall and thread CPU; optional cProfile."""

    def __init__(self, engine: Any, profile: bool) -> None:
        self.calls: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)  # start, wall, cpu
        self.lock = threading.Lock()
        self.profiler = cProfile.Profile() if profile else None
        self.wrapped: list[str] = []
        self.settled = threading.Event()  # the rollout left rolling-out (aborted, completed, waiting-approval)
        for name in ENGINE_METHODS:
            method = getattr(engine, name, None)
            if callable(method):
                setattr(engine, name, self._wrap(name, method))
                self.wrapped.append(name)
        reader = getattr(engine, "progress", None)
        for name, label in READER_METHODS.items():
            method = getattr(reader, name, None)
            if callable(method):
                setattr(reader, name, self._wrap(label, method))
                self.wrapped.append(f"progress.{name}")
        table = getattr(engine, "table", None)
        change = getattr(table, "change", None)
        if callable(change):
            def watched_change(*args: Any, **kwargs: Any) -> Any:
                result = change(*args, **kwargs)
                if kwargs.get("state") in FINAL:
                    self.settled.set()
                return result

            table.change = watched_change

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began, start, cpu = time.time(), time.perf_counter(), time.thread_time()
            profiled = self.profiler is not None and self.lock.acquire(blocking=False)
            if profiled:
                assert self.profiler is not None
                self.profiler.enable()
            try:
                return method(*args, **kwargs)
            finally:
                if profiled:
                    assert self.profiler is not None
                    self.profiler.disable()
                    self.lock.release()
                self.calls[name].append((began, time.perf_counter() - start, time.thread_time() - cpu))

        return timed

    def summary(self, since: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, calls in self.calls.items():
            recent = [c for c in calls if c[0] >= since]
            if not recent:
                continue
            walls = [c[1] for c in recent]
            out[name] = {"calls": len(recent), "wall_total": sum(walls), "wall_median": statistics.median(walls),
                         "wall_max": max(walls), "cpu_total": sum(c[2] for c in recent)}
        return out

    def timeline(self, since: float, names: Sequence[str] = ("tick", "_step", "_progress", "_abort")) -> list[
            tuple[str, float, float, float]]:
        """(method, start, wall, thread CPU) of each call since ``since``, start relative to it."""
        rows = [(name, c[0] - since, c[1], c[2]) for name in names for c in self.calls.get(name, []) if c[0] >= since]
        return sorted(((n, round(a, 4), round(w, 4), round(c, 4)) for n, a, w, c in rows), key=lambda r: r[1])

    def profile_text(self, top: int = 30) -> str:
        if self.profiler is None:
            return ""
        buffer = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=buffer)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        return buffer.getvalue()


# The abort rule, replayed ------------------------------------------------------------------------
def find_trip(probe: Probe, members: Mapping[str, int], bad_sequence: Mapping[str, int], abort_percent: float,
              abort_min: int, *, count_refused: bool = True) -> dict[str, Any] | None:
    """The report, in the hub's order of receipt, after which the abort rule first holds.

    A member's first report after its release document was handed out counts once:
    code 200 with ``lastAppliedSequence`` at least that document's: succeeded; 500
    (same condition): failed; 4xx: refused (a refusal does not move the sequence).
    ``count_refused`` False: refusals stay pending, as the engine's ``classify`` sees them today.
    """
    executed: dict[str, str] = {}
    bad = 0
    for at, device_id, payload in probe.reports:
        if device_id not in members or device_id in executed or device_id not in bad_sequence:
            continue
        state = json.loads(payload)
        code = (state.get("status") or {}).get("code")
        applied = state.get("lastAppliedSequence") or 0
        if isinstance(code, int) and 400 <= code < 500:
            if not count_refused:
                continue
            outcome = "refused"
        elif applied >= bad_sequence[device_id] and code == 500:
            outcome = "failed"
        elif applied >= bad_sequence[device_id] and code == 200:
            outcome = "succeeded"
        else:
            continue
        executed[device_id] = outcome
        bad += outcome != "succeeded"
        if len(executed) >= abort_min and bad and 100 * bad / len(executed) > abort_percent:
            return {"at": at, "device": device_id, "outcome": outcome, "executed": len(executed), "bad": bad,
                    "reported_at": state.get("reportedAt")}
