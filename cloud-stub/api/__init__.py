"""The hub's REST API: thin FastAPI routers over the hub's services (``edgeship.hub.services``).

Build it with ``create_app(services, OperatorTokens(store))``; create operator
tokens with ``create_token(store, name, role=..., expires=...)``; what each role
may do is ``edgeship.hub.api.roles``. Errors are mapped to HTTP in one place,
``edgeship.hub.api.errors``.
"""

from __future__ import annotations

from edgeship.hub.api.app import create_app
from edgeship.hub.api.auth import (
    AuthenticationError,
    OperatorTokens,
    PermissionDeniedError,
    TokenCheck,
    TokenGrant,
    create_token,
)
from edgeship.hub.api.errors import status_for

__all__ = [
    "AuthenticationError",
    "OperatorTokens",
    "PermissionDeniedError",
    "TokenCheck",
    "TokenGrant",
    "create_app",
    "create_token",
    "status_for",
]
