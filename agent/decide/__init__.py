"""The agent's decisions, apart from I/O: accept a document, plan, run a plan, report.

Nothing here talks to MQTT, HTTP or a runtime; the reconcile loop wires these to
the broker and to a :class:`~edgeship.agent.runtimes.base.ModuleRuntime`:

    accepted = accept_document(raw, trust_root, device_id, last_applied, now)   # or a refusal code
    commands = plan(desired_from(accepted), current_from(runtime))
    result   = runner.run(accepted.sequence, commands)
    publish(build_report(...))
"""

from __future__ import annotations

from edgeship.agent.decide.accept import (
    STATUS_CODES,
    AcceptedDocument,
    ExpiredDocumentError,
    ReplayError,
    WrongDeviceError,
    accept_document,
    status_code_for,
)
from edgeship.agent.decide.plan import (
    Command,
    CurrentState,
    DesiredModule,
    DesiredState,
    RestartLimits,
    RunningService,
    plan,
)
from edgeship.agent.decide.report import build_report, overall_status
from edgeship.agent.decide.runner import CoolOff, Executor, ModuleOutcome, PlanRunner, RunResult

__all__ = [
    "STATUS_CODES",
    "AcceptedDocument",
    "Command",
    "CoolOff",
    "CurrentState",
    "DesiredModule",
    "DesiredState",
    "Executor",
    "ExpiredDocumentError",
    "ModuleOutcome",
    "PlanRunner",
    "ReplayError",
    "RestartLimits",
    "RunResult",
    "RunningService",
    "WrongDeviceError",
    "accept_document",
    "build_report",
    "overall_status",
    "plan",
    "status_code_for",
]
