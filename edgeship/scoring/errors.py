"""Request-level errors of the scoring server, as branches of edgeship's one exception tree.

They carry no HTTP status: ``app.py`` maps each class to a status in one table.
"""

from __future__ import annotations

from edgeship.errors import InputError, ScoringError

__all__ = [
    "HeaderTooLargeError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestError",
    "RunFailedError",
    "UnsupportedMediaError",
]


class RequestError(InputError):
    """A request is malformed or does not match what the service expects."""


class UnsupportedMediaError(RequestError):
    """The request body has a content type the endpoint does not accept."""


class MethodNotAllowedError(RequestError):
    """The endpoint exists but not for this HTTP method."""


class NotFoundError(RequestError):
    """No such endpoint, model or document (e.g. no swagger for an undecorated ``run``)."""


class HeaderTooLargeError(RequestError):
    """A request header the server reads (a request id) is longer than it accepts."""


class PayloadTooLargeError(RequestError):
    """The request body exceeds the server's limit."""


class RunFailedError(ScoringError):
    """The entry script's ``run()`` (or a model backend) raised while handling a valid request."""
