"""The reported state: what the agent publishes, retained, on ``edgeship/v1/devices/{id}/reported``.

One JSON object, built from data only (``docs/deployments.md``)::

    {"schemaVersion": 1, "deviceId": "dev-1", "reportedAt": "...Z",
     "lastAppliedSequence": 7,
     "status": {"code": 200, "description": "ok: ...", "message": null},
     "modules": {"digits": {"version": 3, "desiredVersion": 3, "service": "digits.b",
                            "status": "running", "restartCount": 0, "exitCode": null,
                            "lastError": null, "port": 5001}},
     "trustRootVersion": 2, "trustRoot": {"version": 2, "lastError": null}}

``lastAppliedSequence`` is the last document the agent accepted and acted on,
even if a module of it then failed (``status.code`` 500 and the module's
``lastError`` say so), or is still applying because its download host is unreachable
(``status.code`` 202, the module's ``lastError`` says what it waits for; ADR 0042): the
sequence is what replay protection compares against.
A refused document never changes it. ``trustRootVersion`` is the trust root the
agent verifies with; ``trustRoot.lastError`` says why the last trust-root message was
refused (``docs/agent.md``, rotation), and never changes ``status``.

A published report also carries ``"reportNumber": N``, which grows by one per published
report and never goes back; the reconciler adds it once it knows the report changed
(``agent/state/report_number.py``), so it is not built here.

The hub validates every report against ``edgeship.reported.ReportedState`` and
refuses what does not fit, so free text is clipped here to its limits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgeship.agent.decide.accept import STATUS_CODES, status_code_for
from edgeship.agent.decide.plan import CurrentState, DesiredState
from edgeship.agent.decide.runner import RunResult
from edgeship.deployment import format_time
from edgeship.reported_text import MAX_MESSAGE, clip

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "overall_status"]

REPORT_SCHEMA_VERSION = 1


def overall_status(refusal: BaseException | None, result: RunResult | None) -> int:
    """The refusal's code when the document was refused; else 500 if a module failed, 202 if a module
    only waits for an unreachable host (in progress), else 200."""
    if refusal is not None:
        return status_code_for(refusal)
    if result is None or result.ok:
        return 200
    return 202 if result.waiting else 500


def build_report(
    *,
    device_id: str,
    last_applied_sequence: int | None,
    status: int,
    current: CurrentState,
    desired: DesiredState | None = None,
    result: RunResult | None = None,
    message: str | None = None,
    now: datetime,
    trust_root_version: int | None = None,
    trust_root_error: str | None = None,
) -> dict[str, Any]:
    """The reported-state object; ``current`` is the runtime's view *after* the run."""
    if status not in STATUS_CODES:
        raise ValueError(f"status {status} is not one of the documented codes {sorted(STATUS_CODES)}")
    modules: dict[str, dict[str, Any]] = {}
    names = set(current.active) | set(desired.modules if desired else ())
    for name in sorted(names):
        service = current.services.get(current.active.get(name, ""))
        want = desired.modules.get(name) if desired else None
        outcome = result.outcomes.get(name) if result else None
        entry: dict[str, Any] = {
            "version": service.version if service else None,
            "desiredVersion": want.version if want else None,
            "service": service.service if service else None,
            "status": service.state if service else "failed",
            "restartCount": service.restart_count if service else 0,
            "exitCode": service.exit_code if service else None,
            "lastError": clip(outcome.error) if outcome and not outcome.ok else None,
            "port": service.port if service else None,
        }
        if outcome is not None and outcome.cooling_off and not outcome.waiting:
            entry["status"] = "backoff"
        if service is None and want is not None and (outcome is None or outcome.waiting):
            entry["status"] = "stopped"  # desired but not yet attempted, or waiting for its download
        modules[name] = entry
    report: dict[str, Any] = {
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "deviceId": device_id,
        "reportedAt": format_time(now),
        "lastAppliedSequence": last_applied_sequence,
        "status": {"code": status, "description": STATUS_CODES[status], "message": clip(message, MAX_MESSAGE)},
        "modules": modules,
    }
    if trust_root_version is not None:
        report["trustRootVersion"] = trust_root_version
        report["trustRoot"] = {"version": trust_root_version, "lastError": clip(trust_root_error)}
    return report
