"""Schemathesis against real scoring servers: no input a caller sends gets a 5xx, answers match the schema.

Three documents the server publishes are fuzzed through schemathesis' own engine
(the ``st run`` phases examples, coverage and fuzzing; valid and invalid data):
``/swagger.json?version=3`` of a decorated entry script (``/score``), and
``/v2/openapi.json`` of that script and of a no-code ONNX model (``/v2/...``).
The script's ``run()`` never raises on what its decorators deliver, so a 5xx is
always the server's fault, never the model's.

Bounded: a fixed number of examples per operation, deterministic generation (a
failure is reproducible, not a fluke) and a pytest timeout as the hard stop.
There is no per-request deadline: that would be a timing assertion on a shared
machine. A failure prints schemathesis' title and the reproducing curl command.
"""

from __future__ import annotations

import pytest
import schemathesis
from conftest import SCRIPTS, Server
from schemathesis import GenerationMode
from schemathesis.config import HealthCheck
from schemathesis.engine import from_schema
from schemathesis.engine.events import EngineFinished, FatalError, NonFatalError, ScenarioFinished

from edgeship.workspace import Workspace

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
EXAMPLES = 50  # per operation, phase and generation mode

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]


def fuzz(server: Server, document: str) -> list[str]:
    """Run schemathesis on ``document``; returns one line per failed check or engine error."""
    schema = schemathesis.openapi.from_url(server.url + document)
    schema.config.update(base_url=server.url, workers=1, suppress_health_check=[HealthCheck.all])
    schema.config.checks.update(included_check_names=CHECKS)
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=EXAMPLES,
        deterministic=True,
        database="none",
    )
    problems: list[str] = []
    checked = finished = 0
    for event in from_schema(schema).execute():
        if isinstance(event, EngineFinished):
            finished += 1
        if isinstance(event, ScenarioFinished):
            for nodes in event.recorder.checks.values():
                checked += len(nodes)
                for node in nodes:
                    if node.failure_info is not None:
                        info = node.failure_info
                        problems.append(f"{event.recorder.label}: {info.failure.title}\n  {info.code_sample}")
        elif isinstance(event, (FatalError, NonFatalError)):
            problems.append(f"schemathesis could not test {document}: {event.value!r}")
    # A crashed schemathesis worker sends no events: never take silence for success.
    assert finished == 1 and checked >= EXAMPLES, f"schemathesis ran {checked} checks on {document}"
    return problems


@pytest.fixture(scope="module")
def script_server(serve) -> Server:
    return serve("--entry-script", str(SCRIPTS / "fuzz_schema.py"))


@pytest.fixture(scope="module")
def model_server(serve, model_workspace: Workspace) -> Server:
    return serve("-m", "mnist:1", "--workspace", str(model_workspace.root))


def test_score_of_a_decorated_script_never_answers_5xx(script_server: Server) -> None:
    assert fuzz(script_server, "/swagger.json?version=3") == []


def test_v2_routes_of_an_entry_script_never_answer_5xx(script_server: Server) -> None:
    assert fuzz(script_server, "/v2/openapi.json") == []


def test_v2_routes_of_a_no_code_onnx_model_never_answer_5xx(model_server: Server) -> None:
    assert fuzz(model_server, "/v2/openapi.json") == []
