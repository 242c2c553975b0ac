"""FastAPI dependencies: the services from the app's state, and the operator token check."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edgeship.hub.api.auth import AuthenticationError, TokenCheck, TokenGrant, authorize
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.services import Catalog, Deployments, Fleet, HubServices, TrustRotation
from edgeship.hub.services.rollouts import Rollouts

__all__ = [
    "get_catalog", "get_credentials", "get_deployments", "get_fleet", "get_rollouts", "get_trust", "require_operator",
]

_bearer = HTTPBearer(
    auto_error=False, description="An operator token ('edgeship hub token create NAME [--role read-only]')."
)


def _services(request: Request) -> HubServices:
    services: HubServices = request.app.state.services
    return services


def get_fleet(request: Request) -> Fleet:
    return _services(request).fleet


def get_catalog(request: Request) -> Catalog:
    return _services(request).catalog


def get_deployments(request: Request) -> Deployments:
    return _services(request).deployments


def get_rollouts(request: Request) -> Rollouts:
    return _services(request).rollouts


def get_trust(request: Request) -> TrustRotation:
    return _services(request).trust


def get_credentials(request: Request) -> DeviceCredentials:
    credentials: DeviceCredentials = request.app.state.credentials
    return credentials


def require_operator(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> TokenGrant:
    """The caller's token grant, once its token is accepted (401 otherwise: missing, unknown, expired, revoked)
    and its role allows this route (403 otherwise, :mod:`edgeship.hub.api.roles`). Every operator route
    depends on this, so the role rule is enforced here and nowhere else."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("This endpoint needs an operator token: send 'Authorization: Bearer <token>'.")
    tokens: TokenCheck = request.app.state.tokens
    grant = tokens.check(credentials.credentials)
    route = getattr(request.scope.get("route"), "path", request.url.path)
    authorize(grant, request.method, route, request.path_params)
    return grant
