"""The OpenAPI document of an entry script, generated from its inference-schema decorators.

As Azure ML: ``?version=2`` (default) gives Swagger 2.0, ``3``/``3.0``/``3.1``
OpenAPI 3; a ``swagger.json`` (2) or ``swagger3.json`` file beside the entry
script is served instead of the generated one. Unlike Azure ML, an undecorated
``run`` gets no document (Azure invents empty object schemas): the reason is
returned as a 404 so a client knows to add decorators.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeship.scoring.errors import NotFoundError

__all__ = ["build_swagger"]

_ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}


def _user_file(script_dir: Path, version: str) -> dict[str, Any] | None:
    names = ["swagger.json", "swagger2.json"] if version == "2" else [f"swagger{version}.json"]
    for name in names:
        path = script_dir / name
        if path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
    return None


def _operations(input_ref: str, output_ref: str, openapi3: bool) -> dict[str, Any]:
    message = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
    error: dict[str, Any] = {
        "description": "4xx: the input is invalid and the message says why. "
        "5xx: run() failed; the message names a request id for the server log.",
    }
    healthy: dict[str, Any] = {"description": "Healthy"}
    if openapi3:
        error["content"] = {"application/json": {"schema": message}}
        healthy["content"] = {"text/plain": {"schema": {"type": "string"}}}
        body = {"required": True, "content": {"application/json": {"schema": {"$ref": input_ref}}}}
        ok = {
            "description": "The output of run()",
            "content": {"application/json": {"schema": {"$ref": output_ref}}},
        }
        score: dict[str, Any] = {"requestBody": body, "responses": {"200": ok, "default": error}}
    else:
        error["schema"] = message
        params = [
            {"name": "serviceInputPayload", "in": "body", "required": True, "schema": {"$ref": input_ref}}
        ]
        ok = {"description": "The output of run()", "schema": {"$ref": output_ref}}
        score = {"parameters": params, "responses": {"200": ok, "default": error}}
    score.update(
        operationId="RunMLService",
        description="Run the entry script's run() on the input.",
        security=[{"Bearer": []}],
    )
    health = {
        "operationId": "ServiceHealthCheck",
        "description": "Liveness: answers Healthy.",
        "responses": {"200": healthy},
    }
    if not openapi3:
        health["produces"] = ["text/plain"]
    return {"/": {"get": health}, "/score": {"post": score}}


def build_swagger(run: Any, service_name: str, script_dir: Path, version: str | None) -> dict[str, Any]:
    wanted = _ALIASES.get(version or "2")
    if wanted is None:
        raise NotFoundError(f"Swagger version {version!r} is not valid; use 2, 3 or 3.1.")
    from_file = _user_file(script_dir, wanted)
    if from_file is not None:
        return from_file
    from inference_schema.schema_util import (
        get_input_schema,
        get_output_schema,
        get_supported_versions,
        is_schema_decorated,
    )

    if not is_schema_decorated(run):
        raise NotFoundError(
            "run() has no @input_schema/@output_schema decorators, so there is no swagger document; "
            "decorate run() with inference-schema or add a swagger.json beside the entry script."
        )
    supported = get_supported_versions(run)
    if not any(v in supported for v in (wanted, f"{wanted}.0")):
        raise NotFoundError(
            f"The schema of run() cannot be written as version {wanted}; supported: {supported}."
        )
    inputs, outputs = get_input_schema(run), get_output_schema(run)
    info = {"title": service_name, "description": f"API of the {service_name} service", "version": "1.0"}
    bearer = {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "description": "Bearer <key> when the service has keys.",
    }
    if wanted == "2":
        return {
            "swagger": "2.0",
            "info": info,
            "schemes": ["http", "https"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": bearer},
            "paths": _operations("#/definitions/ServiceInput", "#/definitions/ServiceOutput", False),
            "definitions": {"ServiceInput": inputs or {"type": "object"}, "ServiceOutput": outputs or {}},
        }
    return {
        "openapi": "3.1.0" if wanted == "3.1" else "3.0.1",
        "info": info,
        "paths": _operations("#/components/schemas/ServiceInput", "#/components/schemas/ServiceOutput", True),
        "components": {
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"ServiceInput": inputs or {"type": "object"}, "ServiceOutput": outputs or {}},
        },
    }
