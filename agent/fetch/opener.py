"""urllib's opener for one bounded GET (:func:`~edgeship.agent.fetch.bounded.open_range`).

Its handlers make connections through :class:`~edgeship.agent.fetch.bounded.Connections`
(so that a cancellation can shut their sockets down) and follow redirects to http(s)
only. Kept apart from ``bounded.py`` because they subclass ``urllib.request``'s
handlers: the agent imports this module at its first download, so an agent that has not
downloaded since it started does not hold ``urllib.request`` (ADR 0043).
"""

from __future__ import annotations

import http.client
import urllib.request
from typing import Any

from edgeship.agent.fetch.bounded import Connections, DownloadError

__all__ = ["build_opener"]


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.factory(http.client.HTTPConnection), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self._connections = connections

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.factory(http.client.HTTPSConnection), req)


class _NoOtherSchemes(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib allows ftp too)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if not newurl.startswith(("http://", "https://")):
            raise DownloadError(f"{req.full_url} redirected to {newurl!r}, which is not http(s); fix the blob host.")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def build_opener(connections: Connections) -> urllib.request.OpenerDirector:
    """An opener whose connections ``connections`` makes and remembers."""
    return urllib.request.build_opener(_HTTP(connections), _HTTPS(connections), _NoOtherSchemes())
