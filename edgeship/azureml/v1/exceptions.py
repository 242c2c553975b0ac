"""``azureml.exceptions``: the exception names v1 scripts catch, inside edgeship's error tree.

Scripts write ``except WebserviceException: pass`` around ``Webservice(ws, name).delete()``;
that keeps working because a missing service raises :class:`WebserviceException` here
as in Azure. Every class is an :class:`~edgeship.errors.EdgeshipError`, so the CLI
prints one sentence.
"""

from __future__ import annotations

from edgeship.errors import EdgeshipError

__all__ = [
    "AzureMLException",
    "ModelNotFoundException",
    "UnsupportedCallError",
    "UserErrorException",
    "WebserviceException",
    "refuse",
]


class AzureMLException(EdgeshipError):
    """Base of the v1 exceptions (``azureml.exceptions.AzureMLException``)."""

    @property
    def message(self) -> str:  # azure's exceptions carry .message; scripts read it
        return str(self)


class UserErrorException(AzureMLException):
    """The script asked for something wrong (a bad argument, a missing file)."""


class WebserviceException(AzureMLException):
    """A service could not be found, deployed, called or deleted."""


class ModelNotFoundException(AzureMLException):
    """No registered model of that name (and version)."""


class UnsupportedCallError(UserErrorException):
    """A v1 call edgeship does not honour; the message names the call and what to use instead."""


def refuse(call: str, instead: str) -> UnsupportedCallError:
    """The error for ``call``: ``raise refuse("Model.package", "run 'edgeship package ...'")``."""
    return UnsupportedCallError(f"{call} is not supported by edgeship's Azure ML v1 layer; {instead}.")
