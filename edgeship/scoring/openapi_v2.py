"""The OpenAPI 3.0 document of the Open Inference Protocol routes, served at ``GET /v2/openapi.json``.

``/swagger.json`` describes ``/score`` as Azure ML does and stays as Azure ML has
it; the v2 routes get their own document, written for the one model this service
serves: its paths are literal (``/v2/models/<name>/infer``), its input names and
datatypes are the model's. A pure function of the model metadata, so it says
exactly what ``/v2/models/<name>`` says. Where the server is more lenient than
the protocol (nested tensor data, same-kind casts) the document lists what is
accepted: the datatypes an input can be cast from, not only its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeship import __version__
from edgeship.scoring.v2 import DATATYPES

__all__ = ["v2_openapi"]

_ERROR_REF = {"$ref": "#/components/responses/Error"}
_JSON = "application/json"


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _get(operation_id: str, description: str, schema: dict[str, Any], keyed: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "description": description,
        "responses": {"200": _ok(description, schema), "default": _ERROR_REF},
    }
    if keyed:
        op["security"] = [{"Bearer": []}]
    return {"get": op}


def _accepted_datatypes(datatype: str) -> list[str]:
    """The request datatypes the server casts to ``datatype`` (same-kind casts, as ``check_inputs``)."""
    if datatype not in DATATYPES or datatype == "BYTES":
        return [datatype]
    want = np.dtype(DATATYPES[datatype])
    return [d for d, t in DATATYPES.items() if d != "BYTES" and np.can_cast(np.dtype(t), want, "same_kind")]


def _request_input(spec: dict[str, Any] | None) -> dict[str, Any]:
    """One ``inputs[]`` item: the model's input ``spec``, or any tensor when the model declares none."""
    shape: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    properties: dict[str, Any] = {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "shape": shape,
        "data": {"type": "array", "description": "Row-major values, flat or nested."},
        "parameters": {"type": "object"},
    }
    if spec is not None:
        properties["name"] = {"type": "string", "enum": [spec["name"]]}
        properties["datatype"] = {"type": "string", "enum": _accepted_datatypes(spec["datatype"])}
        shape["minItems"] = shape["maxItems"] = len(spec["shape"])
        shape["description"] = f"The model takes {spec['shape']} (-1: any)."
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": properties,
    }


def _schemas(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "parameters": {"type": "object"},
        },
    }
    items = [_request_input(s) for s in inputs] or [_request_input(None)]
    output_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    return {
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": items[0] if len(items) == 1 else {"oneOf": items}},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": output_tensor},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_meta},
                "outputs": {"type": "array", "items": tensor_meta},
                "parameters": {"type": "object"},
            },
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }


def v2_openapi(metadata: dict[str, Any], version: str | None, keyed: bool) -> dict[str, Any]:
    """The document for the model ``metadata`` describes (as ``/v2/models/<name>`` answers it).

    ``keyed``: the service has Bearer keys, so model routes declare the ``Bearer`` scheme.
    """
    name = metadata["name"]
    prefixes = [f"/v2/models/{name}"] + ([f"/v2/models/{name}/versions/{version}"] if version else [])
    schemas = _schemas(metadata.get("inputs", []))
    ref = "#/components/schemas/"
    flag = {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}
    paths: dict[str, Any] = {
        "/v2": _get(
            "ServerMetadata",
            "Server metadata",
            {
                "type": "object",
                "required": ["name", "version", "extensions"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                },
            },
            False,
        ),
        "/v2/health/live": _get(
            "ServerLive", "Liveness", {"type": "object", "properties": {"live": {"type": "boolean"}}}, False
        ),
        "/v2/health/ready": _get("ServerReady", "Readiness", flag, False),
    }
    for i, prefix in enumerate(prefixes):
        suffix = "Version" if i else ""
        paths[prefix] = _get(f"ModelMetadata{suffix}", "Model metadata", {"$ref": ref + "ModelMetadata"}, keyed)
        paths[f"{prefix}/ready"] = _get(f"ModelReady{suffix}", "Model readiness", flag, keyed)
        infer: dict[str, Any] = {
            "operationId": f"ModelInfer{suffix}",
            "description": "Run the model on the input tensors.",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {"$ref": ref + "InferenceRequest"}}}},
            "responses": {
                "200": _ok("The output tensors", {"$ref": ref + "InferenceResponse"}),
                "default": _ERROR_REF,
            },
        }
        if keyed:
            infer["security"] = [{"Bearer": []}]
        paths[f"{prefix}/infer"] = {"post": infer}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{name} (Open Inference Protocol)",
            "description": "The v2 REST routes of this edgeship scoring service.",
            "version": __version__,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "4xx: the request is wrong and the message says how. "
                    "5xx: the model failed; the message names a request id for the server log.",
                    "content": {_JSON: {"schema": {"$ref": ref + "Error"}}},
                }
            },
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
