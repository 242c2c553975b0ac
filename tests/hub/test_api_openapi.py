"""The hub's OpenAPI declares every status each route can answer: generic rules plus a pinned table.

Cheap (no server, no fuzzing): it reads ``create_app(...).openapi()``. The generic rules
follow from what FastAPI and ``edgeship.hub.api.errors`` do to every route:

- a route that needs the token (``security``) answers 401 (no or bad token) and 403 (role);
- a route with a path id answers 404; a route with parameters or a body answers 422;
- a route with a body answers 413 past ``MAX_REQUEST_BYTES`` (Starlette's body limit);
- a route that reads the store answers 503 when the database is down.

:data:`ROUTE_STATUSES` pins what each handler itself can raise on top (400 from service
validation, 409, 416, 504 ...). A new route fails here until it is added, with the
statuses its handler can answer: that keeps ``status_code_conformance`` (the fuzz test)
true for routes added later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hub_world import HubWorld

from edgeship.errors import InputError
from edgeship.hub.api import OperatorTokens, create_app
from edgeship.hub.api.schemas import DEPLOYMENT_ID_RULE, DEVICE_ID_RULE, METHOD_RULE, MODULE_NAME_RULE
from edgeship.hub.services import validate_deployment_id, validate_module_name
from edgeship.mqtt.identity import validate_device_id

# (method, path) -> the statuses the handler raises itself, beyond the generic rules.
ROUTE_STATUSES: dict[tuple[str, str], set[int]] = {
    ("GET", "/devices"): {200},
    ("POST", "/devices"): {201, 400, 409},
    ("POST", "/devices/{device_id}/credentials/rotate"): {200, 400},
    ("DELETE", "/devices/{device_id}"): {200, 400},
    ("GET", "/devices/{device_id}"): {200, 400},
    ("PUT", "/devices/{device_id}/tags"): {200, 400, 409},  # 409: a device out of document sequences
    ("GET", "/devices/{device_id}/desired"): {200, 400},
    ("GET", "/devices/{device_id}/telemetry"): {200, 400},
    ("POST", "/devices/{device_id}/methods/{method}"): {200, 400, 504},
    ("GET", "/modules"): {200, 400},
    ("POST", "/modules"): {201, 400, 404, 409},
    ("GET", "/modules/{name}/{version}"): {200, 400},
    ("GET", "/deployments"): {200},
    ("POST", "/deployments"): {201, 400, 404, 409},
    ("GET", "/deployments/{deployment_id}"): {200, 400},
    ("DELETE", "/deployments/{deployment_id}"): {204, 400, 409},
    ("GET", "/deployments/{deployment_id}/rollout"): {200, 400},  # 404: no such deployment, or no rollout
    ("GET", "/deployments/{deployment_id}/rollout/gates"): {200, 400},  # 404: no such deployment, or no rollout
    ("GET", "/deployments/{deployment_id}/events"): {200, 400},
    ("POST", "/deployments/{deployment_id}/rollout/{action}"): {200, 400, 409},  # 409: the state refuses it
    ("GET", "/trust-root"): {200},
    ("PUT", "/trust-root"): {200, 400, 409},
    ("GET", "/blobs/{digest}"): {200, 206, 400, 416},
    ("GET", "/uploads/{digest}"): {200, 400},
    ("PUT", "/uploads/{digest}"): {200, 201, 400, 413},
    ("POST", "/modules/signed"): {201, 400, 409, 422},
    ("GET", "/healthz"): {200},
}
NO_STORE = {("GET", "/healthz")}  # routes that never touch the database
PUBLIC = {("GET", "/blobs/{digest}"), ("GET", "/healthz")}  # no token: devices fetch blobs by digest
PLAIN_TEXT_ERRORS = {413, 416}  # Starlette's body limit and the blob route answer plain text (responses.errors)
VERBS = {"get", "put", "post", "delete", "patch", "head", "options"}


def expected_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """Every status the operation must declare: the generic rules plus :data:`ROUTE_STATUSES`."""
    wanted = set(ROUTE_STATUSES.get((method, path), set()))
    parameters = operation.get("parameters", [])
    if operation.get("security"):
        wanted |= {401, 403}
    if any(p.get("in") == "path" for p in parameters):
        wanted.add(404)
    if parameters or "requestBody" in operation:
        wanted.add(422)
    if "requestBody" in operation:
        wanted.add(413)
    if (method, path) not in NO_STORE:
        wanted.add(503)
    return wanted


def undeclared(spec: dict[str, Any]) -> list[str]:
    """``"METHOD PATH: STATUS"`` for every status an operation of ``spec`` should declare and does not."""
    missing = []
    for path, item in spec["paths"].items():
        for verb, operation in item.items():
            if verb not in VERBS:
                continue
            declared = {int(code) for code in operation.get("responses", {}) if code.isdigit()}
            for status in sorted(expected_statuses(verb.upper(), path, operation) - declared):
                missing.append(f"{verb.upper()} {path}: {status}")
    return missing


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world = HubWorld(Path(tmp_path_factory.mktemp("openapi")) / "hub")
    world.root.mkdir(parents=True)
    service = world.services(f"sqlite:///{world.root / 'hub.db'}")
    try:
        return create_app(service, OperatorTokens(service.store)).openapi()
    finally:
        service.store.close()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(verb.upper(), path, op) for path, item in spec["paths"].items() for verb, op in item.items()
            if verb in VERBS]


def test_every_route_is_pinned_with_the_statuses_its_handler_raises(spec: dict[str, Any]) -> None:
    routes = {(method, path) for method, path, _op in _operations(spec)}
    new = sorted(routes - set(ROUTE_STATUSES))
    assert not new, (
        f"Routes {new} are not in ROUTE_STATUSES (tests/hub/test_api_openapi.py): add each with the statuses "
        "its handler can answer, and declare them on the route with responses=errors(...)."
    )
    assert not sorted(set(ROUTE_STATUSES) - routes), "ROUTE_STATUSES names routes the app no longer has"


def test_every_route_but_the_public_ones_needs_the_operator_token(spec: dict[str, Any]) -> None:
    """A route added without the operator dependency would be open to anyone; it must be listed in PUBLIC."""
    open_routes = {(method, path) for method, path, op in _operations(spec) if not op.get("security")}
    assert open_routes == PUBLIC


def test_every_route_declares_every_status_it_can_answer(spec: dict[str, Any]) -> None:
    assert undeclared(spec) == []


def test_the_rules_count_what_a_route_without_declarations_misses() -> None:
    """The rules themselves: a bare authenticated route with a path id and a body misses 401/403/404/413/422/503."""
    bare = {"paths": {"/devices/{device_id}/tags": {"put": {
        "security": [{"HTTPBearer": []}], "parameters": [{"in": "path", "name": "device_id"}],
        "requestBody": {}, "responses": {"200": {}},
    }}}}
    statuses = (400, 401, 403, 404, 409, 413, 422, 503)
    assert undeclared(bare) == [f"PUT /devices/{{device_id}}/tags: {s}" for s in statuses]


def test_every_error_answer_has_the_one_error_model(spec: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/ErrorOut"
    for method, path, op in _operations(spec):
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            content = response.get("content", {})
            if int(code) in PLAIN_TEXT_ERRORS:
                assert list(content) == ["text/plain"], (method, path, code)
                continue
            schema = content.get("application/json", {}).get("schema", {})
            assert schema.get("$ref") == error_ref, f"{method} {path} {code} answers {schema}, not ErrorOut"
            assert response.get("description"), (method, path, code)
    assert set(spec["components"]["schemas"]["ErrorOut"]["required"]) == {"detail", "type"}


def test_every_route_declares_a_success_with_a_schema(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, f"{method} {path} declares no 2xx"
        for code, response in successes.items():
            if code == "204":
                continue
            content = response.get("content", {})
            assert content and all(c.get("schema") for c in content.values()), f"{method} {path} {code}: {content}"


def _method_rule(name: str) -> str:
    """The check ``Fleet.invoke_method`` runs on a method name, with arguments and a wait it accepts."""
    from edgeship.hub.services.rules import check_method_call

    check_method_call(name, {}, 10.0)
    return name


SAMPLES = ["dev-1", "a", "A.b_c:d-e", "x" * 63, "x" * 64, "x" * 65, "x" * 128, "x" * 129, "-x", ".x", "a/b", "a b",
           "a+b", "a#b", "dev-1\n", "\ndev-1", "dé", "", "a\x00b"]


@pytest.mark.parametrize(("rule", "validate"), [
    (DEVICE_ID_RULE, validate_device_id),
    (DEPLOYMENT_ID_RULE, validate_deployment_id),
    (MODULE_NAME_RULE, validate_module_name),
    (METHOD_RULE, _method_rule),
])
def test_the_id_rules_the_openapi_documents_are_the_ones_the_service_enforces(
    rule: dict[str, Any], validate: Callable[[str], str]
) -> None:
    for sample in SAMPLES:
        documented = re.fullmatch(rule["pattern"], sample) is not None and len(sample) <= rule["maxLength"]
        try:
            validate(sample)
            enforced = True
        except InputError:
            enforced = False
        assert documented == enforced, (rule, sample)
