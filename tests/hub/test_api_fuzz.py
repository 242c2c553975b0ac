"""Schemathesis against a real hub: every operation of its OpenAPI, with a valid operator token, no 5xx.

The hub is a whole ``HubServer`` (uvicorn, SQLite or PostgreSQL, MQTT bridge to a real
Mosquitto), seeded with the world its OpenAPI examples name: module ``digits:1``, device
``dev-1`` and deployment ``lab``, so the examples phase reaches past the 404s. A paho
client stands in for every device's agent and answers each direct method, so the
methods route is fuzzed through the broker too.

``st run`` runs as a subprocess with a ``schemathesis.toml`` written here: the examples,
coverage (boundary and negative values), fuzzing and stateful phases, at most
:data:`MAX_EXAMPLES` cases per operation, one worker (CI machines are small). Checks:
no 5xx (``not_a_server_error``), every status declared (``status_code_conformance``)
and every body matching its declared schema (``response_schema_conformance``). The seed
is random; a failure prints it with a curl line that reproduces the case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hub_workspace import make_hub_workspace
from mqtt_probe import Probe, Received
from parts import need

from edgeship.hub.api import create_token
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt import parse_device_topic, response_topic

# Cases per operation and phase: about 20 s a backend on an idle 2-core machine. A deeper run:
# EDGESHIP_FUZZ_EXAMPLES=500 python -m pytest tests/hub/test_api_fuzz.py
MAX_EXAMPLES = int(os.environ.get("EDGESHIP_FUZZ_EXAMPLES", "25"))
RUN_GUARD = 200 + 4 * MAX_EXAMPLES  # seconds before a hung run is stopped (a guard, not a timing assertion)
METHODS = "/devices/{device_id}/methods/{method}"


@dataclass
class FuzzHub:
    url: str
    token: str


def _answer_every_method(client: Probe, message: Received) -> None:
    topic = parse_device_topic(message.topic)
    if topic is not None and topic.channel == "commands":
        answer = {"status": 200, "result": {"method": topic.rest[0]}}
        client.client.publish(response_topic(topic.device_id, topic.rest[1]), json.dumps(answer), qos=1)


@pytest.fixture
def fuzz_hub(tmp_path: Path, hub_url: str, mosquitto: Any) -> Iterator[FuzzHub]:
    ws, _world = make_hub_workspace(tmp_path / "hubws", modules=1)
    with HubServer(HubConfig(workspace=ws.root, db_url=hub_url, broker_url=mosquitto.url, port=0)) as hub:
        token = create_token(hub.store, "fuzz")
        with httpx.Client(base_url=hub.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            seeded = [
                c.post("/modules", json={"workspace": str(ws.root), "name": "digits", "version": 1}),
                c.post("/devices", json={"id": "dev-1", "tags": {"site": "lab"}}),
                c.post("/deployments", json={"name": "lab", "targetCondition": "tags.site = 'lab'",
                                             "modules": [{"name": "digits", "version": 1}]}),
            ]
        assert [r.status_code for r in seeded] == [201, 201, 201], [r.text for r in seeded]
        agent = Probe(mosquitto.url)
        agent.handlers.append(_answer_every_method)
        agent.subscribe("edgeship/v1/devices/+/commands/+/+")
        try:
            yield FuzzHub(hub.api_url, token)
        finally:
            agent.close()


def _config(hub: FuzzHub) -> str:
    """``schemathesis.toml``: bounded examples, the three checks; 504 allowed only where a device may be silent."""
    return f"""
workers = 1
request-timeout = 60
headers = {{ Authorization = "Bearer {hub.token}" }}

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
response_schema_conformance.enabled = true

[phases.stateful]
max-steps = 6

# A direct method waits for the device; a device too slow for the timeout asked (0.1 s
# at the lowest) is the documented 504, not a fault of the hub.
[[operations]]
include-path = "{METHODS}"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""


def _schemathesis() -> list[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    need(st is not None, "schemathesis (pip install 'edgeship[dev]')")
    assert st is not None
    return [st]


@pytest.mark.mosquitto
@pytest.mark.slow
@pytest.mark.timeout(RUN_GUARD + 60)
def test_no_input_gets_a_5xx_or_an_undeclared_status(fuzz_hub: FuzzHub, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(fuzz_hub))
    run = subprocess.run(
        [*_schemathesis(), "--config-file", str(config), "--no-color", "run", f"{fuzz_hub.url}/openapi.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=RUN_GUARD,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:]
    spec = httpx.get(f"{fuzz_hub.url}/openapi.json").json()
    operations = sum(1 for path in spec["paths"].values() for method in path if method != "parameters")
    assert f"Tested: {operations}\n" in report, report[-4000:]  # every operation of the OpenAPI was run
