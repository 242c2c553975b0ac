"""The reported state's schema: one pydantic model the hub validates with and the agent's tests check against.

An agent publishes it, retained, on ``edgeship/v1/devices/{id}/reported``
(``edgeship.agent.decide.report.build_report`` builds it; ``docs/mqtt.md``)::

    {"schemaVersion": 1, "deviceId": "dev-1", "reportedAt": "2026-01-01T00:00:00Z",
     "reportNumber": 1767225600042, "lastAppliedSequence": 7,
     "status": {"code": 200, "description": "ok: ...", "message": null},
     "modules": {"digits": {"version": 3, "desiredVersion": 3, "service": "digits.b",
                            "status": "running", "restartCount": 0, "exitCode": null,
                            "lastError": null, "port": 5001}},
     "trustRootVersion": 2, "trustRoot": {"version": 2, "lastError": null}}

It lives in the shared core because the hub must not import the agent. The hub
stores a report only if it validates, because what it stores is shown to operators
and read by the deployment status: unknown keys, wrong types, strings over
:data:`MAX_TEXT` / :data:`MAX_MESSAGE` characters and more than :data:`MAX_MODULES`
modules are refused. Only ``schemaVersion`` and ``status`` are required, so the
minimal reports older tools send still count; every field an agent sends is checked.

Invariant: every report ``build_report`` can produce validates here; the agent clips
its free-text fields with :func:`clip` to the same limits, so a long error message
shortens a report instead of getting it refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError

from edgeship.errors import InputError
from edgeship.reported_text import MAX_MESSAGE, MAX_MODULES, MAX_NAME, MAX_REPORT_NUMBER, MAX_TEXT, clip

__all__ = [
    "IN_PROGRESS",
    "MAX_MESSAGE",
    "MAX_MODULES",
    "MAX_TEXT",
    "ModuleName",
    "ReportedModule",
    "ReportedState",
    "ReportedStatus",
    "TrustRootReport",
    "clip",
    "parse_reported",
]


IN_PROGRESS = 202
"""``status.code`` of a document accepted and still applying: a module waits for an unreachable download host and is
retried (the agent's ``STATUS_CODES``; ADR 0042). The hub counts it as pending, neither applied nor failed."""

ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=MAX_NAME)]
"""A module name as a report or telemetry batch names it: letters, digits, ``.``, ``_``, ``-``."""

_Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
_Count = Annotated[int, Field(ge=0, le=2**31 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False, strict=True)


class ReportedStatus(_Strict):
    code: int = Field(ge=100, le=599)  # HTTP-like: 200 ok, 4xx refused document, 500 failed apply
    description: _Text = ""
    message: Annotated[str, StringConstraints(max_length=MAX_MESSAGE)] | None = None


class ReportedModule(_Strict):
    version: _Count | None = None
    desired_version: _Count | None = Field(default=None, alias="desiredVersion")
    service: Annotated[str, StringConstraints(max_length=MAX_NAME)] | None = None
    status: Literal["running", "stopped", "failed", "backoff"]
    restart_count: _Count = Field(default=0, alias="restartCount")
    exit_code: Annotated[int, Field(ge=-(2**31), le=2**31 - 1)] | None = Field(default=None, alias="exitCode")
    last_error: _Text | None = Field(default=None, alias="lastError")
    port: Annotated[int, Field(ge=0, le=65535)] | None = None


class TrustRootReport(_Strict):
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    last_error: _Text | None = Field(default=None, alias="lastError")


class ReportedState(_Strict):
    schema_version: Literal[1] = Field(alias="schemaVersion")
    device_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, alias="deviceId")
    reported_at: Annotated[datetime, Strict(False)] | None = Field(default=None, alias="reportedAt")  # JSON text
    # grows by one per published report (agent/state/report_number.py): orders two reports of one document
    report_number: Annotated[int, Field(ge=0, le=MAX_REPORT_NUMBER)] | None = Field(default=None, alias="reportNumber")
    last_applied_sequence: _Count | None = Field(default=None, alias="lastAppliedSequence")
    status: ReportedStatus
    modules: dict[ModuleName, ReportedModule] = Field(default_factory=dict, max_length=MAX_MODULES)
    trust_root_version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None, alias="trustRootVersion")
    trust_root: TrustRootReport | None = Field(default=None, alias="trustRoot")


def parse_reported(data: Any) -> ReportedState:
    """Validate a decoded report; an InputError names the first bad field and what the limit is."""
    if not isinstance(data, dict):
        raise InputError("A reported state must be a JSON object.")
    try:
        return ReportedState.model_validate(data)  # strict: "5" is not a number, true is not 1
    except ValidationError as exc:
        first = exc.errors()[0]
        where = clip(".".join(str(p) for p in first["loc"]), 200) or "report"  # a key may be any length
        raise InputError(
            f"Reported state field {where}: {first['msg']}; the hub keeps the device's previous report "
            "(the schema is in docs/mqtt.md)."
        ) from None

