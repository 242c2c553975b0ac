"""Sign-in, the session cookie and CSRF tokens of the dashboard (ADR 0031).

The session cookie holds the operator token the user typed: every request checks it
again through the hub's :class:`~edgeship.hub.api.auth.TokenCheck` (as the REST API
does with a Bearer token), so a revoked or expired token ends the session at once, and
any hub process serving the same database accepts the session: nothing lives in one
process's memory. The cookie is ``HttpOnly`` (scripts cannot read it), ``SameSite=Lax``
(a cross-site form post does not carry it), ``Secure`` when the request came over TLS,
limited to ``/ui`` and ends with the browser session.

Every POST carries a CSRF token: an HMAC of a fixed label keyed by the session's token,
so the hub keeps no state for it and a page of another site cannot compute it. A POST
whose ``Origin`` names another host is refused before anything else, sign-in included.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from edgeship.errors import EdgeshipError
from edgeship.hub.api.auth import AuthenticationError, PermissionDeniedError, TokenCheck, TokenGrant, authorize

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SignInRequiredError",
    "Viewer",
    "check_csrf",
    "check_origin",
    "clear_session",
    "csrf_token",
    "current_viewer",
    "may",
    "start_session",
]

COOKIE = "edgeship_ui"
CSRF_FIELD = "csrf"  # the hidden form field
CSRF_HEADER = "X-CSRF-Token"  # what the page's scripts send with htmx requests
MAX_TOKEN_CHARS = 256
_CSRF_LABEL = b"edgeship dashboard csrf v1"


class SignInRequiredError(EdgeshipError):
    """The request has no session, or its token is no longer accepted: the page sends the user to sign-in."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the token's grant and the CSRF token the page's forms carry."""

    grant: TokenGrant
    csrf: str

    @property
    def name(self) -> str:
        return self.grant.name

    @property
    def role(self) -> str:
        return self.grant.role


def csrf_token(token: str) -> str:
    return hmac.new(token.encode("utf-8"), _CSRF_LABEL, hashlib.sha256).hexdigest()


def _token_check(request: Request) -> TokenCheck:
    tokens: TokenCheck = request.app.state.tokens
    return tokens


def current_viewer(request: Request) -> Viewer:
    """The signed-in viewer; :class:`SignInRequiredError` without a session or with a token no longer accepted."""
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise SignInRequiredError("Sign in with an operator token to use the dashboard.")
    try:
        grant = _token_check(request).check(token)
    except AuthenticationError as exc:
        raise SignInRequiredError(str(exc)) from None
    return Viewer(grant, csrf_token(token))


def sign_in(request: Request, token: str) -> TokenGrant:
    """The grant of ``token`` (the text typed at sign-in); AuthenticationError when the hub does not accept it."""
    token = token.strip()
    if not token:
        raise AuthenticationError("Type an operator token ('edgeship hub token create NAME' prints one).")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError(f"An operator token is at most {MAX_TOKEN_CHARS} characters; check what you pasted.")
    return _token_check(request).check(token)


def start_session(request: Request, response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="lax", secure=_tls(request),
                        path=_base(request) or "/")


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=_tls(request), path=_base(request) or "/")


def check_origin(request: Request) -> None:
    """Refuse a POST whose ``Origin`` (or, without one, ``Referer``) is another host than the one it was sent to.

    Browsers send ``Origin`` with every form post; ``null`` (a sandboxed or opaque origin) is refused too.
    A request with neither header (a script, curl) passes here and still needs the CSRF token.
    """
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return
    sender = "" if origin == "null" else urlsplit(origin).netloc
    host = request.headers.get("host", "")
    if sender != host:
        raise PermissionDeniedError(
            f"A form from {sender or 'an unknown origin'!r} may not act on this dashboard at {host!r}; "
            "use the dashboard's own pages."
        )


async def check_csrf(request: Request, viewer: Viewer) -> None:
    """Refuse a POST without this session's CSRF token (form field or header)."""
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent:
        form = await request.form()
        value = form.get(CSRF_FIELD, "")
        sent = value if isinstance(value, str) else ""
    if not sent or not hmac.compare_digest(sent, viewer.csrf):
        raise PermissionDeniedError(
            "The request has no valid CSRF token; reload the page and try again (a form from another site cannot act)."
        )


def may(viewer: Viewer, verb: str, route: str, **params: str) -> bool:
    """Whether the viewer's role may ``verb route`` on the REST API: the dashboard allows exactly that."""
    try:
        authorize(viewer.grant, verb, route, params)
    except PermissionDeniedError:
        return False
    return True


def _tls(request: Request) -> bool:
    return request.url.scheme == "https"


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
