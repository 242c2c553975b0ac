"""The reconcile loop's step, as IoT Edge's ``Agent.ReconcileAsync``: desired + current -> plan -> run -> report.

:meth:`Reconciler.offer` takes a ``desired`` message (accept it or remember the
refusal); :meth:`Reconciler.reconcile` reads the current state (agent state plus
the runtime), plans, runs the plan and reports. Each stage catches its own errors,
so a corrupt document, a broken runtime or a failing module still ends in a
report with a status code. A refused document never changes the last applied one:
the agent keeps running (and restarting) the modules of the document it accepted
before. The clock is injected. A report goes out only when it changed, and each one
that goes out takes the next ``reportNumber`` (``agent/state/report_number.py``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from types import MappingProxyType
from typing import Any

from edgeship.agent.decide.accept import AcceptedDocument, accept_document, replay_floor
from edgeship.agent.decide.plan import (
    SLOTS,
    Command,
    CurrentState,
    DesiredModule,
    DesiredState,
    RunningService,
    Switch,
    plan,
)
from edgeship.agent.decide.report import build_report, overall_status
from edgeship.agent.decide.runner import ModuleOutcome, PlanRunner, RunResult
from edgeship.agent.execute import RuntimeExecutor
from edgeship.agent.guard import ModuleGuard
from edgeship.agent.runtimes.base import ModuleRuntime, ModuleStatus, UnknownServiceError
from edgeship.agent.state.report_number import ReportNumbers
from edgeship.agent.state.store import StateStore
from edgeship.errors import EdgeshipError, RuntimeFailure
from edgeship.records import replace
from edgeship.signing import TrustRoot

__all__ = ["Reconciler", "desired_from"]

log = logging.getLogger("edgeship.agent")


def desired_from(accepted: AcceptedDocument) -> DesiredState:
    """Flatten an accepted document for the planner."""
    modules: dict[str, DesiredModule] = {}
    for name, entry in accepted.document.modules.items():
        manifest = accepted.manifests[name]
        archive = manifest.image.archive if manifest.image is not None else None
        modules[name] = DesiredModule(
            name=name,
            version=manifest.version,
            module_digest="sha256:" + hashlib.sha256(accepted.manifest_bytes[name]).hexdigest(),
            lock_digest=manifest.environment.lock_digest,
            bundle_url=entry.blobs.bundle,
            bundle_digest=manifest.bundle.digest,
            image_url=entry.blobs.image if archive is not None else None,
            image_digest=archive.digest if archive is not None and entry.blobs.image is not None else None,
            port=entry.settings.port,
            restart_policy=entry.settings.restart_policy,
            bundle_size=manifest.bundle.size,
            image_size=archive.size if archive is not None and entry.blobs.image is not None else 0,
            parts=manifest.parts is not None,
        )
    return DesiredState(accepted.sequence, modules)


def _is_slot(name: str) -> bool:
    return any(name.endswith(f".{slot}") for slot in SLOTS)


class Reconciler:
    """One agent's decisions over time; not thread-safe (the loop thread owns it; methods meet it at ``guard``)."""

    def __init__(
        self,
        *,
        device_id: str,
        trust_root: TrustRoot,
        state: StateStore,
        runtime: ModuleRuntime,
        executor: RuntimeExecutor,
        runner: PlanRunner,
        publish: Callable[[dict[str, Any]], None],
        now: Callable[[], datetime],
        guard: ModuleGuard | None = None,
        report_numbers: ReportNumbers | None = None,
    ) -> None:
        self.device_id = device_id
        self.trust_root = trust_root
        self.state = state
        self.runtime = runtime
        self.executor = executor
        self.runner = runner
        self.publish = publish
        self.now = now
        self.guard = guard or ModuleGuard()
        self.report_numbers = report_numbers or ReportNumbers(state.root, now)
        self.accepted: AcceptedDocument | None = None
        self.accepted_raw: bytes | None = None
        self.refusal: BaseException | None = None
        self.trust_error: str | None = None  # why the last trust-root message was refused (edgeship.agent.trust)
        # When this agent saw each service stop; a service already down at its first look (after a reboot
        # nothing runs) has no known exit, so it starts at once: the restart cool-off counts from exits seen here.
        self._exit_seen: dict[str, datetime] = {}
        self._observed: set[str] = set()
        self._last_report: dict[str, Any] | None = None
        self._failed: dict[str, tuple[ModuleOutcome, float]] = {}  # module -> (last failure, held until)
        self._failed_sequence: int | None = None

    # -- desired ---------------------------------------------------------------
    def load_cached(self) -> None:
        """Re-verify the cached document (signatures, expiry) so it applies again offline after a restart."""
        raw = self.state.cached_envelope()
        if raw is None:
            return
        try:
            accepted = accept_document(raw, self.trust_root, self.device_id, None, self.now())
        except EdgeshipError as exc:
            self.refusal = exc
            log.warning("cached document not applied again: %s", exc)
            return
        floor = self._floor()
        if floor is not None and accepted.sequence < floor:
            return  # a newer one was applied after it (never written? then nothing to re-apply)
        self.state.accept(raw, accepted.sequence, floor, self.trust_root.role("hub").keyids)
        self.accepted, self.accepted_raw = accepted, raw
        log.info("re-applying cached document %d", accepted.sequence)

    def _floor(self) -> int | None:
        """The sequence a new document must exceed under the current trust root (``replay_floor``)."""
        recorded = self.state.state
        return replay_floor(recorded.last_applied_sequence, recorded.sequence_keys, self.trust_root)

    def offer(self, raw: bytes) -> bool:
        """A ``desired`` message arrived; True when something changed (accepted, or refused)."""
        if raw == self.accepted_raw:
            if self.refusal is None:
                return False  # the retained copy of what already applies (every reconnect delivers it)
            # The hub's newest is what applies, so a refusal since (an older document a broker node's loss left
            # retained, refused as a replay; the hub then sends the newest again, ADR 0044) no longer stands.
            self.refusal = None
            return True
        if not raw:
            return False  # the hub cleared the retained message: keep running the last document
        floor = self._floor()
        try:
            accepted = accept_document(raw, self.trust_root, self.device_id, floor, self.now())
        except EdgeshipError as exc:
            self.refusal = exc
            log.warning("refused a deployment document: %s", exc)
            return True
        except Exception as exc:  # an unexpected parser failure is still a refusal, never a crash
            self.refusal = EdgeshipError(f"The deployment document could not be read: {exc}.")
            log.warning("refused a deployment document: %s", exc)
            return True
        self.state.accept(raw, accepted.sequence, floor, self.trust_root.role("hub").keyids)
        self.accepted, self.accepted_raw, self.refusal = accepted, raw, None
        log.info("accepted document %d (%d modules)", accepted.sequence, len(accepted.document.modules))
        return True

    # -- current ---------------------------------------------------------------
    def current(self) -> CurrentState:
        now = self.now()
        recorded = self.state.state
        statuses: dict[str, ModuleStatus | None] = {}
        for name in recorded.services:
            try:
                statuses[name] = self.runtime.status(name)
            except UnknownServiceError:
                statuses[name] = None
        services: dict[str, RunningService] = {}
        for name, rec in recorded.services.items():
            status = statuses[name]
            if status is None:
                # Recorded, but the runtime has none (a kill before install ended, or it was removed
                # behind our back): forget it, so the planner installs the module again if desired.
                self.executor.forget(name)
                self._exit_seen.pop(name, None)
                self._observed.discard(name)
                continue
            services[name] = self._running(name, rec.module, rec.version, rec.module_digest, rec.lock_digest, status,
                                           now, installed=rec.built)
        try:
            listed = self.runtime.list()
        except RuntimeFailure:
            listed = []
        for status in listed:  # ours by name, but never recorded: an orphan to remove
            if status.name not in services and status.name not in recorded.services and _is_slot(status.name):
                module = status.name.rsplit(".", 1)[0]
                services[status.name] = self._running(status.name, module, 0, "", "", status, now, installed=False)
        active = {m: s for m, s in self.state.state.active.items() if s in services}
        yielded = frozenset(n for n, r in self.state.state.services.items() if r.phase == "yielded" and n in services)
        return CurrentState(now=now, services=services, active=active, environments=self._environments(),
                            yielded=yielded)

    def _running(
        self, name: str, module: str, version: int, digest: str, lock: str, status: ModuleStatus, now: datetime,
        *, installed: bool,
    ) -> RunningService:
        if status.state == "running":
            self._exit_seen.pop(name, None)
        elif name in self._observed:
            self._exit_seen.setdefault(name, now)
        self._observed.add(name)
        return RunningService(
            service=name,
            module=module,
            version=version,
            module_digest=digest if installed else "",
            lock_digest=lock,
            state=status.state,
            restart_count=status.restart_count,
            exit_code=status.exit_code,
            last_exit_time=self._exit_seen.get(name),
            port=status.port,
        )

    def _environments(self) -> frozenset[str]:
        """Lock digests with a ready environment: a built venv (process runtime), else an installed service."""
        installed = {rec.lock_digest for rec in self.state.state.services.values() if rec.built}
        venv_dir = getattr(self.runtime, "venv_dir", None)
        if venv_dir is None:
            return frozenset(installed)
        wanted = {m.environment.lock_digest for m in self.accepted.manifests.values()} if self.accepted else set()
        return frozenset(lock for lock in installed | wanted if (venv_dir(lock) / "bin" / "python").exists())

    # -- one pass ----------------------------------------------------------------
    def reconcile(self) -> dict[str, Any] | None:
        """Plan, run and report once; returns the last report that changed (and was published).

        The switch is a module's commit point: once every candidate of the plan is active,
        the report goes out, and only then are the old slots stopped and removed (a
        server's graceful shutdown takes a while and changes nothing a client can see:
        the report names the active slot). If that clean-up fails, a second report says so.

        A pass whose download was stopped for newer desired state (``RunResult.superseded``)
        neither reports nor cleans up: the loop offers the newer state and plans again at once.

        Direct methods run in another thread (``agent/guard.py``): reading the current state
        and planning happen under ``guard.lock``, which also marks the planned modules as
        applying (a ``restart`` of one of them is answered 409) until the pass ends; the plan
        itself runs without the lock.
        """
        try:
            return self._reconcile()
        finally:
            self.guard.done()

    def _current(self) -> CurrentState:
        with self.guard.lock:
            return self.current()

    def _reconcile(self) -> dict[str, Any] | None:
        result: RunResult | None = None
        desired = desired_from(self.accepted) if self.accepted is not None else None
        error: str | None = None
        cleanup: list[Command] = []
        try:
            with self.guard.lock:
                current = self.current()
                commands = plan(desired, current) if desired is not None else []
                commands, cleanup = _split_at_commit(commands)
                self.guard.mark_applying(c.module for c in [*commands, *cleanup])
            if commands and desired is not None:
                result = self._run(desired.sequence, commands)
                if result.superseded:  # newer desired state is queued (or the agent stops): no report
                    log.info("stopped applying sequence %d (%s)", desired.sequence, result.superseded)
                    return None
                current = self._current()
        except Exception as exc:  # the runtime itself failed: still report
            log.exception("reconcile failed")
            error = f"The agent could not read or change its modules: {exc}"
            current = CurrentState(now=self.now())
            cleanup = []
        published = self._report(desired, current, result, error)
        cleanup = [c for c in cleanup if result is None or result.outcomes.get(c.module, _OK).ok]
        if not cleanup or desired is None:
            return published
        try:
            result = _merge(result, self._run(desired.sequence, cleanup))
            current = self._current()
        except Exception as exc:
            log.exception("reconcile failed")
            error = f"The agent could not read or change its modules: {exc}"
            current = CurrentState(now=self.now())
        return self._report(desired, current, result, error) or published

    def _report(
        self, desired: DesiredState | None, current: CurrentState, result: RunResult | None, error: str | None
    ) -> dict[str, Any] | None:
        """Build the report and publish it, numbered, when it differs from the last one (``reportedAt`` and
        ``reportNumber`` aside)."""
        status = overall_status(self.refusal, result)
        if error is not None and status in (200, 202):
            status = 500
        message = error or (str(self.refusal) if self.refusal is not None else None)
        if message is None and result is not None and not result.ok:
            message = "; ".join(o.error or "" for o in result.outcomes.values() if not o.ok)
        report = build_report(
            device_id=self.device_id,
            last_applied_sequence=self.state.state.last_applied_sequence,
            status=status,
            current=current,
            desired=desired,
            result=result,
            message=message,
            now=self.now(),
            trust_root_version=self.trust_root.version,
            trust_root_error=self.trust_error,
        )
        if self._last_report is not None and _same(report, self._last_report):
            return None
        number = self.report_numbers.take()  # written down before the report goes out
        if number is not None:
            report["reportNumber"] = number
        self._last_report = report
        self.publish(report)
        modules = ", ".join(
            f"{n} v{m['version']} {m['status']}" + (f" :{m['port']}" if m["port"] else "")
            for n, m in report["modules"].items()
        )
        log.info("reported %d (sequence %s): %s", status, report["lastAppliedSequence"], modules or "no modules")
        return report

    def _run(self, sequence: int, commands: list[Command]) -> RunResult:
        """Run the plan, holding back every command of a module whose last failure still cools off.

        The runner cools off only the command that failed; without this, the steps before
        it (install, start of the candidate) would run again on every tick just to be undone.
        """
        if sequence != self._failed_sequence:
            self._failed.clear()
            self._failed_sequence = sequence
        clock = self.runner.clock()
        held = {m for m, (_, until) in self._failed.items() if clock < until}
        runnable = [c for c in commands if c.module not in held]
        self.executor.document = self.accepted
        result = self.runner.run(sequence, runnable) if runnable else RunResult(sequence, MappingProxyType({}), ())
        self._log_result(result)
        ended = self.runner.clock()
        for name, outcome in result.outcomes.items():
            if outcome.ok:
                self._failed.pop(name, None)
            elif not outcome.cooling_off and outcome.failed_command is not None:
                # Cool off from the end of the failure (a health check may have taken a minute).
                delay = self.runner.cooloff.delay(self.runner.failures(outcome.failed_command))
                self._failed[name] = (outcome, max(outcome.retry_at or ended, ended + delay))
        outcomes = dict(result.outcomes)
        for name in held:
            if any(c.module == name for c in commands):
                outcomes[name] = self._failed[name][0]  # reported as it failed: the old slot's state stands
        return replace(result, outcomes=MappingProxyType(outcomes))

    @staticmethod
    def _log_result(result: RunResult) -> None:
        for name, outcome in sorted(result.outcomes.items()):
            if outcome.ok:
                log.info("applied %s (sequence %d)", name, result.sequence)
            elif outcome.waiting and not outcome.cooling_off:
                log.warning("%s waits for its download: %s", name, outcome.error)
            elif not outcome.cooling_off:
                log.warning("%s failed%s: %s", name, " and was rolled back" if outcome.rolled_back else "",
                            outcome.error)


_OK = ModuleOutcome("", ok=True)


def _split_at_commit(commands: list[Command]) -> tuple[list[Command], list[Command]]:
    """The plan up to each module's ``Switch``, and what follows a switch (stopping the old slot).

    Only commands of a module *after* its own switch move to the second list; orphan and
    removal commands, which come first in a plan, stay where they are.
    """
    switched: set[str] = set()
    head: list[Command] = []
    tail: list[Command] = []
    for command in commands:
        (tail if command.module in switched else head).append(command)
        if isinstance(command, Switch):
            switched.add(command.module)
    return head, tail


def _merge(first: RunResult | None, then: RunResult) -> RunResult:
    """One result for a plan run in two parts; a module's later failure wins over its earlier success."""
    if first is None:
        return then
    outcomes = dict(first.outcomes)
    for name, outcome in then.outcomes.items():
        if not outcome.ok or name not in outcomes:
            outcomes[name] = outcome
    return replace(
        first,
        outcomes=MappingProxyType(outcomes),
        executed=first.executed + then.executed,
        undo_errors=first.undo_errors + then.undo_errors,
    )


_UNCOMPARED = ("reportedAt", "reportNumber")  # they differ in every report, so an unchanged state is not sent again


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return ({k: v for k, v in a.items() if k not in _UNCOMPARED}
            == {k: v for k, v in b.items() if k not in _UNCOMPARED})
