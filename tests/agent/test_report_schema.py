"""What the agent reports passes the hub's schema (``edgeship.reported``), and fits the hub's size limit."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from edgeship.agent.decide.plan import CurrentState, DesiredModule, DesiredState, RunningService
from edgeship.agent.decide.report import build_report
from edgeship.agent.decide.runner import ModuleOutcome, RunResult
from edgeship.errors import InputError
from edgeship.hub.bridge.limits import InboundLimits
from edgeship.reported import MAX_MESSAGE, MAX_MODULES, MAX_TEXT, parse_reported

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
LOCK = "sha256:" + "11" * 32


def _module(name: str) -> DesiredModule:
    return DesiredModule(name, 2, f"sha256:{name}-2", LOCK, f"/b/{name}", f"sha256:b-{name}")


def _running(name: str, port: int) -> RunningService:
    return RunningService(f"{name}.a", name, 1, f"sha256:{name}-1", LOCK, "running", restart_count=3, exit_code=1,
                          port=port)


def test_a_healthy_report_validates_as_the_agent_encodes_it() -> None:
    current = CurrentState(NOW, {"digits.a": _running("digits", 5001)}, {"digits": "digits.a"})
    report = build_report(device_id="dev-1", last_applied_sequence=7, status=200, current=current,
                          desired=DesiredState(7, {"digits": _module("digits")}), now=NOW, trust_root_version=2)
    parsed = parse_reported(json.loads(json.dumps(report, sort_keys=True)))  # as agent/link/mqtt.py sends it
    assert parsed.status.code == 200 and parsed.modules["digits"].port == 5001 and parsed.trust_root_version == 2


def test_the_largest_report_the_agent_builds_validates_and_fits_the_hubs_size_limit() -> None:
    names = [f"module-{n:02d}-" + "x" * 36 for n in range(MAX_MODULES)]  # 48 characters: the longest name
    error = "pip install failed: " + "E" * 20_000  # an unbounded exception text
    current = CurrentState(NOW, {f"{n}.a": _running(n, 5000 + i) for i, n in enumerate(names)},
                           {n: f"{n}.a" for n in names})
    result = RunResult(7, {n: ModuleOutcome(n, ok=False, failed_command="install", error=error) for n in names}, ())
    report = build_report(device_id="d" * 128, last_applied_sequence=2**31 - 1, status=500, current=current,
                          desired=DesiredState(7, {n: _module(n) for n in names}), result=result,
                          message="; ".join([error] * MAX_MODULES), now=NOW, trust_root_version=3,
                          trust_root_error=error)
    payload = json.dumps(report, sort_keys=True).encode()
    parsed = parse_reported(json.loads(payload))
    assert len(parsed.modules) == MAX_MODULES
    assert len(parsed.modules[names[0]].last_error or "") == MAX_TEXT
    assert len(parsed.status.message or "") == MAX_MESSAGE
    assert len(payload) <= InboundLimits().reported.max_bytes, f"{len(payload)} bytes"


@pytest.mark.parametrize(("change", "field"), [
    ({"status": {"code": "200"}}, "status.code"),
    ({"unknown": 1}, "unknown"),
    ({"modules": {"digits": {"status": "exploded"}}}, "modules.digits.status"),
    ({"modules": {"digits": {"status": "running", "lastError": "x" * (MAX_TEXT + 1)}}}, "modules.digits.lastError"),
    ({"modules": {f"m{n}": {"status": "running"} for n in range(MAX_MODULES + 1)}}, "modules"),
    ({"modules": {"bad/name": {"status": "running"}}}, "modules.bad/name.[key]"),
    ({"schemaVersion": 2}, "schemaVersion"),
    ({"lastAppliedSequence": True}, "lastAppliedSequence"),
    ({"reportNumber": True}, "reportNumber"),
    ({"reportNumber": "5"}, "reportNumber"),
    ({"reportNumber": 5.0}, "reportNumber"),
    ({"reportNumber": -1}, "reportNumber"),
    ({"reportNumber": 2**53 + 1}, "reportNumber"),
])
def test_a_report_outside_the_schema_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    report = {"schemaVersion": 1, "deviceId": "dev-1", "status": {"code": 200}} | change
    with pytest.raises(InputError, match=re.escape(f"Reported state field {field}:")):
        parse_reported(report)


@pytest.mark.parametrize("number", [0, 1, 2**53, None])
def test_a_report_number_from_0_to_2_53_is_accepted_and_may_be_left_out(number: int | None) -> None:
    report = {"schemaVersion": 1, "status": {"code": 200}} | ({} if number is None else {"reportNumber": number})
    assert parse_reported(json.loads(json.dumps(report))).report_number == number
