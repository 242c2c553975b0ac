"""Gate values beside their thresholds: the rollout view over real HTTP, the REST rollout, and the engine agree.

The hub is ``rollout_hub`` (real services over SQLite, REST app with the dashboard, real
uvicorn). A staged deployment of digits:1 behind two gates; wave 1's three devices report
it running with 0, 1 and 3 restarts, and send telemetry through ``Fleet.record_telemetry``
(what the MQTT bridge calls): 0 of 100 requests failed, 10 of 100, and none at all. The
values the page and ``GET /deployments/lab/rollout/gates`` show are the ones the engine judged.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from rollout_hub import RolloutHub, rollout_hub

from edgeship.hub.rollouts.gate_values import format_value


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RolloutHub]:
    with rollout_hub(tmp_path, devices=6) as served:
        yield served


def _running(hub: RolloutHub, device: str, restarts: int) -> None:
    desired = hub.services.fleet.get_device(device).desired
    assert desired is not None
    hub.services.fleet.record_reported(device, {
        "schemaVersion": 1, "deviceId": device, "lastAppliedSequence": desired.sequence,
        "status": {"code": 200, "description": "ok"},
        "modules": {"digits": {"version": 1, "status": "running", "restartCount": restarts}},
    })


def _telemetry(hub: RolloutHub, device: str, requests: int, server_errors: int) -> None:
    now = datetime.now(timezone.utc)
    hub.services.fleet.record_telemetry(device, {"schemaVersion": 2, "deviceId": device, "samples": [{
        "time": now.isoformat().replace("+00:00", "Z"), "seq": int(now.timestamp()), "cpuPercent": 1.0,
        "memoryBytes": 1, "modules": {"digits": {
            "version": 1, "requests": requests, "errors": server_errors, "serverErrors": server_errors,
            "clientErrors": 0, "latencyMs": {"p50": 3.0, "p95": 5.0, "p99": 9.0}}},
    }]})


def _row(page: str, key: str) -> str:
    found = re.search(rf'<tr data-gate="{re.escape(html.escape(key))}">(.*?)</tr>', page, re.S)
    assert found, page[page.find("gate-values") - 200:][:2000]
    return found.group(1)


def test_the_rollout_view_shows_each_gates_measured_values_against_its_threshold(hub: RolloutHub) -> None:
    rollout = {"waves": "3,6", "soak": "1h", "abortPercent": 100, "gates": ["error_rate <= 5%", "restarts <= 2"]}
    assert hub.create("lab", rollout).status_code == 201
    with httpx.Client(base_url=hub.url, timeout=10) as browser:
        assert browser.post("/ui/signin", data={"token": hub.operator}).status_code == 303
        before = browser.get("/ui/deployments/lab").text
        assert 'id="gate-values"' not in before and "No gate values yet" in before

        clean, flaky, silent = hub.waves("lab")[1]
        for device, restarts in ((clean, 0), (flaky, 1), (silent, 3)):
            _running(hub, device, restarts)
        hub.tick()  # the engine sees the release running: the gates' window starts
        _telemetry(hub, clean, 100, 0)
        _telemetry(hub, flaky, 100, 10)
        hub.tick()
        view = hub.services.rollouts.show("lab")
        assert (view.state, view.waves[0].unhealthy) == ("rolling-out", 2)  # flaky: error rate; silent: restarts

        page = browser.get("/ui/deployments/lab")
        live = browser.get("/ui/deployments/lab/live", headers={"HX-Request": "true"})
    assert page.status_code == 200 and live.status_code == 200
    errors = _row(page.text, "1 digits error_rate <= 5%")
    assert f"10% on <a href=\"/ui/devices/{flaky}\">{flaky}</a>" in errors
    assert "error_rate 10% (10 of 100)" in errors and "BREACH: over the threshold" in errors
    assert re.search(r"<td>1</td><td>1</td><td>1</td><td>0</td>\s*$", errors)  # pass, breach, no data, waiting
    restarts = _row(page.text, "1 digits restarts <= 2")
    assert f"3 on <a href=\"/ui/devices/{silent}\">{silent}</a>" in restarts and "BREACH" in restarts
    assert re.search(r"<td>2</td><td>1</td><td>0</td><td>0</td>\s*$", restarts)
    assert _row(live.text, "1 digits error_rate <= 5%") == errors  # the live region re-reads the same

    with hub.client(hub.reader) as rest:  # the REST rollout carries the same values, for a read-only token too
        shown = rest.get("/deployments/lab/rollout/gates")
        assert rest.get("/deployments/nope/rollout/gates").status_code == 404
    assert shown.status_code == 200
    values = {v["gate"]: v for v in shown.json()}
    assert values["error_rate <= 5%"] | {"worstDetail": ""} == {
        "wave": 1, "module": "digits", "version": 1, "gate": "error_rate <= 5%", "metric": "error_rate",
        "threshold": 0.05, "verdict": "breach", "devices": 3, "passing": 1, "breaching": 1, "noData": 1,
        "waiting": 0, "worst": 0.1, "worstDevice": flaky, "worstDetail": ""}
    assert (values["restarts <= 2"]["verdict"], values["restarts <= 2"]["worst"]) == ("breach", 3.0)


def test_values_read_as_their_gates_are_written() -> None:
    assert [format_value("error_rate", 0.0123), format_value("p99_ratio", 1.456), format_value("restarts", 2.0),
            format_value("error_rate", None)] == ["1.23%", "1.46", "2", "—"]
