"""The running agent: wires config, state, runtime, executor, reconciler, MQTT link and telemetry.

Threads: the loop thread (this object's :meth:`run`) owns every decision —
desired documents, trust roots and timer ticks arrive on one queue; paho's network
thread only enqueues, and after queuing a *new* desired document or trust root it
cancels the download in progress (:attr:`Agent.cancel`), so the loop gets to the newer
state at once instead of waiting behind a slow blob host (ADR 0018); the method
thread (:class:`~edgeship.agent.methods.MethodWorker`) runs direct methods beside the
loop, so a ``logs`` call never waits behind an install, and a ``restart`` changes a
module only under the :class:`~edgeship.agent.guard.ModuleGuard` it shares with the
reconciler (409 while the loop is applying that module); the telemetry thread samples
every ``telemetry_interval`` and sends queued batches.

Stopping the agent leaves its modules running (as IoT Edge's edgeAgent does), so a
restarted agent finds them serving and reinstalls nothing; ``stop_modules=True``
(``--stop-modules-on-exit``) stops them too.

Layout of ``data_dir``::

    state/agent.json, state/desired.dsse.json   agent state (``edgeship.agent.state``)
    state/trust-root.json                        the newest rotated trust root (``edgeship.agent.trust``)
    blobs/sha256/<hex>, blobs/partial/           blob cache (``edgeship.agent.fetch``)
    modules/<service>/                           verified module directories
    runtime/                                     the process runtime's state_dir
    telemetry/                                   queued telemetry samples (``edgeship.agent.telemetry.queue``)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from edgeship.agent.config import AgentConfig
from edgeship.agent.decide.runner import PlanRunner
from edgeship.agent.execute import RuntimeExecutor
from edgeship.agent.fetch.bounded import Cancel, FetchLimits
from edgeship.agent.fetch.download import BlobCache
from edgeship.agent.fetch.parts import PartCache
from edgeship.agent.guard import ModuleGuard
from edgeship.agent.link.mqtt import Inbound, MqttLink
from edgeship.agent.malloc import trim
from edgeship.agent.methods import MethodWorker
from edgeship.agent.reconcile import Reconciler
from edgeship.agent.runtimes.base import ModuleRuntime, UnknownServiceError
from edgeship.agent.state.store import StateStore
from edgeship.agent.telemetry.confirm import StoredConfirmations
from edgeship.agent.telemetry.queue import TelemetryQueue
from edgeship.agent.telemetry.sampler import TelemetrySampler
from edgeship.agent.telemetry.sender import TelemetrySender
from edgeship.agent.trust import TrustRootKeeper
from edgeship.errors import ConfigError, RuntimeFailure

__all__ = ["Agent", "make_runtime"]

log = logging.getLogger("edgeship.agent")
_SEND_POLL = 0.2  # seconds between telemetry send attempts


def make_runtime(kind: str, data_dir: Path) -> ModuleRuntime:
    """The configured runtime; ``auto`` is Docker when an engine answers, else processes."""
    from edgeship.agent.runtimes.process import ProcessRuntime

    if kind in ("docker", "auto"):
        try:
            from edgeship.agent.runtimes.docker import DockerRuntime

            return DockerRuntime()
        except Exception as exc:
            if kind == "docker":
                raise RuntimeFailure(f"runtime = \"docker\" but no Docker engine answers ({exc}).") from exc
    return ProcessRuntime(Path(data_dir) / "runtime")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Agent:
    """One device's agent. ``run(stop)`` blocks until ``stop`` is set."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        runtime: ModuleRuntime | None = None,
        now: Callable[[], datetime] = _utcnow,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        try:
            self.trust = TrustRootKeeper(config.trust_root, data / "state")
        except Exception as exc:
            raise ConfigError(f"trust_root {config.trust_root}: {exc}") from exc
        self.trust_root = self.trust.root
        self.state = StateStore(data)
        self.runtime = runtime or make_runtime(config.runtime, data)
        limits = FetchLimits(config.download_min_rate, config.download_rate_window, config.download_deadline)
        self.blobs = BlobCache(
            data / "blobs", config.hub_url, limits=limits, max_partial_bytes=config.max_partial_bytes
        )
        self.cancel = Cancel()  # set from paho's thread when newer desired state is queued; re-armed by the loop
        self._handoff = threading.Lock()  # queuing an item + cancelling, vs re-arming + looking at the queue
        self._trust_seen: bytes | None = None  # the last trust-root payload paho delivered (paho's thread only)
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.guard = ModuleGuard()
        self.stored = StoredConfirmations()  # the hub's telemetry-stored messages, for the sender
        self.link = MqttLink(
            config.broker_addresses, config.device_id, self.inbox, on_command=self._on_command,
            on_inbound=self._on_inbound, on_stored=self.stored.note, subscribe_qos=config.broker.subscribe_qos,
        )  # fmt: skip
        self.methods = MethodWorker(self.runtime, self.state, self.guard, self.link.respond)
        parts = PartCache(BlobCache(data / "parts", config.hub_url, limits=limits), max_bytes=config.part_cache_bytes)
        self.executor = RuntimeExecutor(
            self.runtime, self.state, self.blobs, self.trust_root, data / "modules",
            port_range=config.port_range, health_timeout=config.health_timeout, min_free_bytes=config.min_free_bytes,
            cancel=self.cancel, log=lambda line: log.debug(line), parts=parts,
        )  # fmt: skip
        self.runner = PlanRunner(self.executor, clock)
        self.reconciler = Reconciler(
            device_id=config.device_id, trust_root=self.trust_root, state=self.state, runtime=self.runtime,
            executor=self.executor, runner=self.runner, publish=self.link.publish_reported, now=now, guard=self.guard,
        )  # fmt: skip
        self.telemetry = TelemetryQueue(data / "telemetry", config.telemetry_queue_limit)
        self.sampler = TelemetrySampler(self.runtime, self.state, self.telemetry, now)
        self.sender = TelemetrySender(config.device_id, self.telemetry, self.link, self.stored,
                                      resend_after=config.telemetry_resend_after)
        self._clock = clock
        self._now = now
        self._last_desired: bytes | None = None  # re-offered after a rotation (it may have been refused for want of it)

    def run(self, stop: threading.Event, *, stop_modules: bool = False) -> None:
        log.info("agent %s starting (runtime %s, data %s)", self.config.device_id, self.runtime.kind,
                 self.config.data_dir)
        self.methods.start()
        self.link.start()
        telemetry = threading.Thread(target=self._telemetry_loop, args=(stop,), name="telemetry", daemon=True)
        telemetry.start()
        try:
            self._sweep()
            self.reconciler.load_cached()
            self._loop(stop)
        finally:
            stop.set()
            telemetry.join(timeout=5)
            self.methods.stop()
            if stop_modules:
                self.stop_modules()
            self.link.stop()
            self.telemetry.close()
            self.blobs.close()
            log.info("agent %s stopped%s", self.config.device_id, " with its modules" if stop_modules else "")

    def _sweep(self) -> None:
        """Before the first pass: delete what a killed predecessor left half-made (``RuntimeExecutor.sweep``)."""
        try:
            removed = self.executor.sweep()
        except Exception:  # a leftover is no reason not to run
            log.exception("sweeping leftovers of an earlier run failed")
            return
        for path in removed:
            log.info("removed %s, left half-made by an earlier run", path)

    def _loop(self, stop: threading.Event) -> None:
        next_tick = 0.0
        while not stop.is_set():
            wait = max(0.0, min(next_tick - self._clock(), 0.5))
            try:
                item: Inbound | None = self.inbox.get(timeout=wait) if wait > 0 else self.inbox.get_nowait()
            except queue.Empty:
                item = None
            if item is not None and item.kind == "desired":
                self._last_desired = item.payload
                if self.reconciler.offer(item.payload):
                    next_tick = 0.0
            elif item is not None and item.kind == "trust-root" and self._on_trust_root(item.payload):
                next_tick = 0.0
            with self._handoff:  # an item queued after this cancels the pass; one queued before is seen here
                self.cancel.reset()
                idle = self.inbox.empty()
            if self._clock() >= next_tick and idle and not stop.is_set():
                self.reconciler.reconcile()
                next_tick = self._clock() + self.config.reconcile_interval

    def _on_inbound(self, item: Inbound) -> None:
        """paho's network thread: queue ``item`` and stop a download it makes stale.

        A retained copy of the document in force (every reconnect delivers one) and the same
        trust-root message again change nothing, so they leave the download alone. Any other
        document or root cancels it, even one the loop will then refuse or one that still
        wants the same blob: the loop decides, and a wanted download resumes from its partial.

        The put and the cancellation happen under ``_handoff``, as the loop's re-arming and its
        look at the queue do: so a cancellation is never lost (the loop either sees the item
        before it starts a pass, or the pass is cancelled) and never hits the pass that applies
        the very item it was sent for.
        """
        stale = True
        if item.kind == "desired" and (not item.payload or item.payload == self.reconciler.accepted_raw):
            stale = False
        if item.kind == "trust-root":
            stale, self._trust_seen = item.payload != self._trust_seen, item.payload
        with self._handoff:
            self.inbox.put(item)
            if stale:
                self.cancel.cancel(f"a newer {item.kind} message arrived")

    def _on_command(self, method: str, payload: bytes, request_id: str) -> None:
        """paho's network thread: hand the call to the method thread (503 at once if its queue is full)."""
        self.methods.submit(method, payload, request_id)

    def _on_trust_root(self, payload: bytes) -> bool:
        """Rotate (``edgeship.agent.trust``), then verify the newest desired document again with the new root."""
        if not self.trust.offer(payload, self._now()):
            return False
        root = self.trust.root
        self.trust_root = self.executor.trust_root = self.reconciler.trust_root = root
        self.reconciler.trust_error = self.trust.last_error
        if self._last_desired is not None:
            self.reconciler.offer(self._last_desired)
        return True

    def _telemetry_loop(self, stop: threading.Event) -> None:
        """Sample and send telemetry; once ``stop`` is set, cancel a download in progress (within ``_SEND_POLL``)."""
        try:
            self._sample_and_send(stop)
        finally:
            self.cancel.cancel("the agent is stopping")

    def _sample_and_send(self, stop: threading.Event) -> None:
        next_sample = self._clock() + self.config.telemetry_interval
        while not stop.wait(_SEND_POLL):
            try:
                if self._clock() >= next_sample:
                    next_sample = self._clock() + self.config.telemetry_interval
                    self.sampler.sample()
                    trim()  # hand back what installs and passes freed since (agent/malloc.py)
                if self.link.connected.is_set():
                    self.sender.pump()
            except Exception:  # telemetry must never take the agent down
                log.exception("telemetry failed")

    def stop_modules(self) -> None:
        for service in sorted(self.state.state.services):
            with contextlib.suppress(UnknownServiceError, RuntimeFailure):
                self.runtime.stop(service)
