"""REST routes for devices, modules and deployments: HTTP in, service call, HTTP out.

Each handler parses the request, calls one method of one service (``edgeship.hub.services``:
fleet, catalog, deployments, trust) and shapes the answer; errors propagate to
``edgeship.hub.api.errors``. The handlers are plain ``def``: FastAPI runs them in its thread pool, and the services
and the database driver are synchronous.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edgeship.errors import InputError
from edgeship.hub.api.auth import TokenGrant
from edgeship.hub.api.deps import (
    get_catalog,
    get_credentials,
    get_deployments,
    get_fleet,
    get_rollouts,
    get_trust,
    require_operator,
)
from edgeship.hub.api.responses import OPERATOR, errors
from edgeship.hub.api.schemas import (
    DEPLOYMENT_ID_RULE,
    DEVICE_ID_RULE,
    MAX_INT,
    METHOD_RULE,
    MODULE_NAME_RULE,
    CredentialsOut,
    DeploymentIn,
    DeploymentOut,
    DeviceCreatedOut,
    DeviceDeletedOut,
    DeviceIn,
    DeviceOut,
    EnvelopeOut,
    MethodAnswerOut,
    ModuleIn,
    ModuleOut,
    RolloutOut,
    TagsIn,
    TelemetryOut,
    TrustRootOut,
    TrustRootRotatedOut,
    parse_rollout,
)
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.services import (
    MAX_METHOD_TIMEOUT,
    MIN_METHOD_TIMEOUT,
    Catalog,
    Deployments,
    Fleet,
    ModuleRefSpec,
    TrustRotation,
)
from edgeship.hub.services.rollouts import Rollouts

__all__ = ["deployments", "devices", "modules", "trust"]

_auth = [Depends(require_operator)]
devices = APIRouter(prefix="/devices", tags=["devices"], dependencies=_auth, responses=OPERATOR)
modules = APIRouter(prefix="/modules", tags=["modules"], dependencies=_auth, responses=OPERATOR)
deployments = APIRouter(prefix="/deployments", tags=["deployments"], dependencies=_auth, responses=OPERATOR)
trust = APIRouter(prefix="/trust-root", tags=["trust root"], dependencies=_auth, responses=OPERATOR)
MAX_TRUST_ROOT_BYTES = 256 * 1024  # one trust-root envelope

# Path parameters, with the examples the OpenAPI shows (and schemathesis tries first).
DeviceId = Annotated[str, PathParam(description="The device's id.", examples=["dev-1"],
                                    json_schema_extra=DEVICE_ID_RULE)]
MethodName = Annotated[str, PathParam(description="A direct method the agent answers.", examples=["logs", "restart"],
                                      json_schema_extra=METHOD_RULE)]
ModuleName = Annotated[str, PathParam(description="The module's name.", examples=["digits"],
                                      json_schema_extra=MODULE_NAME_RULE)]
ModuleVersion = Annotated[int, PathParam(ge=1, le=MAX_INT, description="The module's version.", examples=[1])]
DeploymentId = Annotated[str, PathParam(description="The deployment's name.", examples=["lab"],
                                        json_schema_extra=DEPLOYMENT_ID_RULE)]


@devices.get("", response_model=list[DeviceOut])
def list_devices(fleet: Fleet = Depends(get_fleet)) -> list[DeviceOut]:
    return [DeviceOut.of(view) for view in fleet.list_devices()]


@devices.post("", response_model=DeviceCreatedOut, status_code=201, responses=errors(400, 409, 413, 422))
def create_device(body: DeviceIn, credentials: DeviceCredentials = Depends(get_credentials)) -> DeviceCreatedOut:
    """Create a device, its first document and its broker credentials, which are in this answer only."""
    view, issued = credentials.create_device(body.id, body.tags, body.credentials)
    out = DeviceOut.of(view).model_dump(by_alias=True)
    return DeviceCreatedOut(**out, credentials=issued.to_json(), broker=issued.broker)


@devices.post("/{device_id}/credentials/rotate", response_model=CredentialsOut, responses=errors(400, 404, 422))
def rotate_credentials(
    device_id: DeviceId, credentials: DeviceCredentials = Depends(get_credentials)
) -> CredentialsOut:
    """A new password (or certificate) for the device, shown once; the old one is revoked and the broker reloaded."""
    issued = credentials.rotate_credentials(device_id)
    return CredentialsOut(credentials=issued.to_json(), broker=issued.broker)


@devices.delete("/{device_id}", response_model=DeviceDeletedOut, responses=errors(400, 404, 422))
def delete_device(device_id: DeviceId, credentials: DeviceCredentials = Depends(get_credentials)) -> DeviceDeletedOut:
    """Delete the device with its documents, reports and telemetry; its credentials are revoked (kept for audit)."""
    return DeviceDeletedOut(deleted=device_id, broker=credentials.delete_device(device_id))


@devices.get("/{device_id}", response_model=DeviceOut, responses=errors(400, 404, 422))
def show_device(device_id: DeviceId, fleet: Fleet = Depends(get_fleet)) -> DeviceOut:
    return DeviceOut.of(fleet.get_device(device_id))


@devices.put("/{device_id}/tags", response_model=DeviceOut, responses=errors(400, 404, 409, 413, 422))
def replace_tags(device_id: DeviceId, body: TagsIn, fleet: Fleet = Depends(get_fleet)) -> DeviceOut:
    """Replace the device's tags; the device joins and leaves deployments before this returns."""
    return DeviceOut.of(fleet.update_tags(device_id, body.tags))


@devices.get(
    "/{device_id}/desired",
    response_class=JSONResponse,
    responses={200: {"model": EnvelopeOut, "description": "The signed document."}, **errors(400, 404, 422)},
)
def desired_document(device_id: DeviceId, fleet: Fleet = Depends(get_fleet)) -> Response:
    """The device's newest signed deployment document (the DSSE envelope, as published)."""
    desired = fleet.get_device(device_id).desired
    if desired is None:
        raise HubNotFoundError(f"Device {device_id!r} has no deployment document yet.")
    return Response(desired.envelope, media_type="application/json")


@devices.get("/{device_id}/telemetry", response_model=list[TelemetryOut], responses=errors(400, 404, 422))
def device_telemetry(
    device_id: DeviceId, limit: int = Query(10, ge=1, le=1000), fleet: Fleet = Depends(get_fleet)
) -> list[TelemetryOut]:
    """The device's newest telemetry batches, newest first."""
    return [TelemetryOut(received=r.received, batch=r.batch) for r in fleet.recent_telemetry(device_id, limit)]


@devices.post("/{device_id}/methods/{method}", response_model=MethodAnswerOut, response_model_exclude_unset=True,
              responses=errors(400, 404, 413, 422, 504))
def invoke_method(
    device_id: DeviceId,
    method: MethodName,
    args: dict[str, Any] = Body(default_factory=dict, description="The method's arguments, a JSON object."),
    timeout: float = Query(10.0, ge=MIN_METHOD_TIMEOUT, le=MAX_METHOD_TIMEOUT,
                           description="Seconds to wait for the device's answer."),
    fleet: Fleet = Depends(get_fleet),
) -> dict[str, Any]:
    """Call a direct method (``restart``, ``logs``) over MQTT; returns the device's ``{"status", "result"|"error"}``.

    504 when the device does not answer within ``timeout``; 503 when the hub has no broker connection.
    """
    return fleet.invoke_method(device_id, method, args, timeout)


@modules.get("", response_model=list[ModuleOut], responses=errors(400, 422))
def list_modules(name: str | None = None, catalog: Catalog = Depends(get_catalog)) -> list[ModuleOut]:
    return [ModuleOut.of(record) for record in catalog.list_modules(name)]


@modules.post("", response_model=ModuleOut, status_code=201, responses=errors(400, 404, 409, 413, 422))
def upload_module(body: ModuleIn, catalog: Catalog = Depends(get_catalog)) -> ModuleOut:
    """Verify a stored module against the hub's release keys and take its envelope and blobs."""
    return ModuleOut.of(catalog.upload_from_workspace(Path(body.workspace), body.name, body.version))


@modules.get("/{name}/{version}", response_model=ModuleOut, responses=errors(400, 404, 422))
def show_module(name: ModuleName, version: ModuleVersion, catalog: Catalog = Depends(get_catalog)) -> ModuleOut:
    return ModuleOut.of(catalog.get_module(name, version), envelope=True)


@deployments.get("", response_model=list[DeploymentOut])
def list_deployments(service: Deployments = Depends(get_deployments)) -> list[DeploymentOut]:
    return [DeploymentOut.of(record) for record in service.list_deployments()]


@deployments.post("", response_model=DeploymentOut, status_code=201,
                  responses=errors(400, 404, 409, 413, 422))
def create_deployment(
    body: DeploymentIn,
    grant: TokenGrant = Depends(require_operator),
    service: Deployments = Depends(get_deployments),
    rollouts: Rollouts = Depends(get_rollouts),
) -> DeploymentOut:
    """Create a deployment; with a ``rollout`` policy in waves it starts with its first wave (the token's name is
    the actor of its events), else every targeted device gets it before this returns."""
    specs = [ModuleRefSpec(m.name, m.version, m.settings) for m in body.modules]
    policy = parse_rollout(body.rollout)
    record = service.create_deployment(body.name, body.target_condition, specs, body.priority,
                                       rollout=policy, actor=grant.name)
    return DeploymentOut.of(record, service.deployment_status(record.id), _rollout(rollouts, record.id))


@deployments.get("/{deployment_id}", response_model=DeploymentOut, responses=errors(400, 404, 422))
def show_deployment(
    deployment_id: DeploymentId,
    service: Deployments = Depends(get_deployments),
    rollouts: Rollouts = Depends(get_rollouts),
) -> DeploymentOut:
    """The deployment with per-device status and IoT Edge's counts, and its rollout when it goes out in waves."""
    record = service.get_deployment(deployment_id)
    return DeploymentOut.of(record, service.deployment_status(deployment_id), _rollout(rollouts, record.id))


def _rollout(rollouts: Rollouts, deployment_id: str) -> RolloutOut | None:
    try:
        return RolloutOut.model_validate(rollouts.show(deployment_id).to_dict())
    except HubNotFoundError:  # a deployment without a rollout went to every targeted device at once
        return None


@deployments.delete("/{deployment_id}", status_code=204, response_class=Response,
                     responses=errors(400, 404, 409, 422))
def delete_deployment(deployment_id: DeploymentId, service: Deployments = Depends(get_deployments)) -> Response:
    service.delete_deployment(deployment_id)
    return Response(status_code=204)


@trust.get("", response_model=TrustRootOut)
def show_trust_root(trust: TrustRotation = Depends(get_trust)) -> dict[str, Any]:
    """The hub's current trust root, and the versions of the chain devices get on their ``trust-root`` topic."""
    root = trust.trust_root
    return {"version": root.version, "trustRoot": root.to_dict(), "chain": trust.chain_versions()}


@trust.put(
    "",
    response_model=TrustRootRotatedOut,
    responses=errors(400, 409, 413, 422),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": EnvelopeOut.model_json_schema(by_alias=True)}}}},
)
async def publish_trust_root(request: Request, trust: TrustRotation = Depends(get_trust)) -> dict[str, Any]:
    """Rotate to the trust-root envelope in the body (signed by the current root keys), publish it to every
    device, and re-sign every document when the hub key changed. 422 when devices would refuse it."""
    body = await request.body()
    if len(body) > MAX_TRUST_ROOT_BYTES:
        raise InputError(f"The trust root is over {MAX_TRUST_ROOT_BYTES} bytes; a trust root is a few KB.")
    root = await run_in_threadpool(trust.rotate_trust_root, body)
    return {"version": root.version, "trustRoot": root.to_dict(), "hubKeys": [s.keyid for s in trust.signers]}
