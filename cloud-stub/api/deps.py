"""FastAPI dependencies: the service from the app's state, and the operator token check."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edgeship.hub.api.auth import AuthenticationError, TokenCheck
from edgeship.hub.credentials import DeviceCredentials
from edgeship.hub.service import HubService

__all__ = ["get_credentials", "get_service", "require_operator"]

_bearer = HTTPBearer(auto_error=False, description="An operator token (create one with create_token).")


def get_service(request: Request) -> HubService:
    service: HubService = request.app.state.service
    return service


def get_credentials(request: Request) -> DeviceCredentials:
    credentials: DeviceCredentials = request.app.state.credentials
    return credentials


def require_operator(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> str:
    """The operator token's name; raises AuthenticationError (401) otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("This endpoint needs an operator token: send 'Authorization: Bearer <token>'.")
    tokens: TokenCheck = request.app.state.tokens
    name = tokens.check(credentials.credentials)
    if name is None:
        raise AuthenticationError("The operator token is not valid on this hub; create one with create_token.")
    return name
