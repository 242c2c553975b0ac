"""The plan runner: run commands in order, with per-command cool-off and blue/green undo.

As IoT Edge's ``OrderedRetryPlanRunner``: commands run in plan order; a command
that failed is not retried until an exponential cool-off since its last failure
has passed (``base * 2**(failures-1)``, capped), and all counts reset when a
document with a new sequence arrives. The clock and the executor are injected,
so tests drive it with a fake clock and a recording executor.

Per module, a failure stops that module's remaining commands (other modules go
on) and undoes what this run already did for it, newest first — for a failed
health check that is "stop and remove the candidate", so the old slot keeps
serving. :class:`~edgeship.agent.decide.plan.Switch` is the commit point: once a
candidate is active, a later failure (stopping the old slot) undoes nothing.

A command that raises :class:`Superseded` (a download stopped because a newer desired
state arrived) is no failure: it counts towards no cool-off, its module's completed
steps are undone, and the run stops there (``RunResult.superseded``) so the caller can
plan again for the newer state at once.

A command that raises :class:`~edgeship.errors.UnreachableError` (the blob host is down:
refused, reset, timed out) is no failure of the release either: it cools off and is undone
like a failure, but its outcome is *waiting* (``ModuleOutcome.waiting``), and a run whose
only trouble is waiting is reported as in progress (202), not failed (ADR 0042).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from edgeship.agent.decide.plan import Command, Switch
from edgeship.errors import EdgeshipError, UnreachableError
from edgeship.records import record

__all__ = ["CoolOff", "Executor", "ModuleOutcome", "PlanRunner", "RunResult", "Superseded"]


class Superseded(EdgeshipError):
    """The command was stopped because newer desired state arrived; plan again, nothing failed."""


class Executor(Protocol):
    """Carries out one command (runtime, downloader, verifier); raises on failure."""

    def execute(self, command: Command) -> None: ...


@record
class CoolOff:
    """Delay before retrying a failed command: ``base * 2**(failures - 1)`` seconds, at most ``cap``."""

    base: float = 5.0  # seconds
    cap: float = 300.0  # seconds

    def delay(self, failures: int) -> float:
        return float(min(self.base * (2 ** min(max(failures - 1, 0), 30)), self.cap))


@record
class ModuleOutcome:
    """How one module fared in a run; ``error`` is the reason the report carries."""

    module: str
    ok: bool = True
    failed_command: str | None = None  # command id
    error: str | None = None
    rolled_back: bool = False
    retry_at: float | None = None  # clock time after which the failed command may run again
    cooling_off: bool = False  # skipped this run: its command is still in cool-off
    waiting: bool = False  # not failed: what it needs (the blob host) was unreachable; retried after the cool-off


@record
class RunResult:
    sequence: int
    outcomes: Mapping[str, ModuleOutcome]
    executed: tuple[str, ...]  # ids of the commands executed (undo included), in order
    undo_errors: tuple[str, ...] = ()
    superseded: str | None = None  # why the run stopped early (newer desired state); later modules have no outcome

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes.values())

    @property
    def waiting(self) -> bool:
        """Not ok, but only because a module waits for an unreachable host: in progress, not failed."""
        return not self.ok and all(outcome.ok or outcome.waiting for outcome in self.outcomes.values())


@record
class _Failures:
    count: int
    last: float
    error: str
    waiting: bool = False


class PlanRunner:
    """Holds the cool-off state between runs; one instance per agent."""

    def __init__(self, executor: Executor, clock: Callable[[], float], cooloff: CoolOff | None = None) -> None:
        self.executor = executor
        self.clock = clock
        self.cooloff = cooloff or CoolOff()
        self._sequence: int | None = None
        self._failures: dict[str, _Failures] = {}

    def failures(self, command_id: str) -> int:
        entry = self._failures.get(command_id)
        return entry.count if entry else 0

    def run(self, sequence: int, commands: Sequence[Command]) -> RunResult:
        """Run ``commands`` for the document ``sequence``; never raises for a command's failure."""
        if sequence != self._sequence:
            self._failures.clear()
            self._sequence = sequence
        outcomes: dict[str, ModuleOutcome] = {}
        done: dict[str, list[Command]] = {}
        executed: list[str] = []
        undo_errors: list[str] = []
        superseded: str | None = None
        for command in commands:
            if command.module in outcomes and not outcomes[command.module].ok:
                continue
            now = self.clock()
            entry = self._failures.get(command.id)
            if entry is not None and now < entry.last + self.cooloff.delay(entry.count):
                retry_at = entry.last + self.cooloff.delay(entry.count)
                undo_errors += self._undo(done.pop(command.module, []), executed)
                outcomes[command.module] = ModuleOutcome(
                    command.module,
                    ok=False,
                    failed_command=command.id,
                    error=f"{entry.error} (failures: {entry.count}; next try in {retry_at - now:.0f} s)",
                    rolled_back=False,
                    retry_at=retry_at,
                    cooling_off=True,
                    waiting=entry.waiting,
                )
                continue
            executed.append(command.id)
            try:
                self.executor.execute(command)
            except Superseded as exc:
                undo_errors += self._undo(done.pop(command.module, []), executed)
                outcomes.pop(command.module, None)
                superseded = f"{command.kind} of {command.service} stopped: {exc}"
                break
            except Exception as exc:  # the executor's failure is data here; the loop must go on
                waiting = isinstance(exc, UnreachableError)
                reason = f"{command.kind} of {command.service} {'waits' if waiting else 'failed'}: {exc}"
                count = entry.count + 1 if entry else 1
                self._failures[command.id] = _Failures(count, now, reason, waiting)
                undone = done.pop(command.module, [])
                undo_errors += self._undo(undone, executed)
                outcomes[command.module] = ModuleOutcome(
                    command.module,
                    ok=False,
                    failed_command=command.id,
                    error=reason,
                    rolled_back=any(c.undo() for c in undone),
                    retry_at=now + self.cooloff.delay(count),
                    waiting=waiting,
                )
                continue
            self._failures.pop(command.id, None)
            if isinstance(command, Switch):
                done.pop(command.module, None)  # committed: nothing before the switch is undone
            else:
                done.setdefault(command.module, []).append(command)
            outcomes.setdefault(command.module, ModuleOutcome(command.module))
        return RunResult(sequence, MappingProxyType(outcomes), tuple(executed), tuple(undo_errors), superseded)

    def _undo(self, completed: list[Command], executed: list[str]) -> list[str]:
        """Run the undo of ``completed`` newest first; return the errors (undo goes on past them)."""
        errors: list[str] = []
        for command in reversed(completed):
            for step in command.undo():
                executed.append(step.id)
                try:
                    self.executor.execute(step)
                except Exception as exc:  # keep undoing: a leftover is reported, not fatal
                    errors.append(f"undo {step.kind} of {step.service} failed: {exc}")
        return errors
