"""The one exception tree of edgeship.

Every error a user can cause derives from :class:`EdgeshipError` and carries a
message that says what was wrong and what to do about it. Third-party errors are
wrapped at the boundary (``raise RegistryError(...) from exc``). Core errors carry
no HTTP status codes or exit codes: the transports (CLI, HTTP, MQTT) map them in
one place each.
"""

from __future__ import annotations

__all__ = [
    "AccuracyBudgetError",
    "BadSignatureError",
    "BlobCorruptedError",
    "BundleError",
    "CalibrationDataError",
    "ConfigError",
    "EdgeshipError",
    "EnvelopeError",
    "InputError",
    "ManifestError",
    "ModelNotFoundError",
    "NoAnswerError",
    "PackagingError",
    "PayloadTypeError",
    "ProvisioningError",
    "QuantizationError",
    "RegistryError",
    "ReleaseError",
    "RuntimeFailure",
    "ScoringError",
    "SignatureError",
    "SigningKeyError",
    "ThresholdError",
    "TransportError",
    "TrustRootError",
    "UnknownKeyError",
    "UnreachableError",
    "UnsupportedModelError",
    "WorkspaceError",
]


class EdgeshipError(Exception):
    """Root of every error edgeship raises on purpose; the message is user-facing."""


class InputError(EdgeshipError):
    """The caller gave something malformed (a name, a path, a value)."""


class ConfigError(InputError):
    """A configuration file (inferenceconfig, deploymentconfig, agent.toml) is invalid."""


class WorkspaceError(EdgeshipError):
    """The workspace directory is missing, unreadable or not an edgeship workspace."""


class RegistryError(EdgeshipError):
    """A model registry operation failed."""


class ModelNotFoundError(RegistryError):
    """No model has the requested name or version."""


class BlobCorruptedError(RegistryError):
    """A stored blob no longer matches its content address."""


class ScoringError(EdgeshipError):
    """The scoring server could not load or run an entry script or model."""


class ManifestError(EdgeshipError):
    """A module manifest or deployment document is malformed."""


class SignatureError(EdgeshipError):
    """A signature is missing, invalid, by an unknown key, or below the threshold."""


class EnvelopeError(SignatureError):
    """A signed envelope is malformed (not JSON, bad base64, missing or mistyped fields)."""


class PayloadTypeError(SignatureError):
    """An envelope carries a different payloadType than the verifier expects."""


class UnknownKeyError(SignatureError):
    """A signature names (or matches) no key the trust root trusts for the role."""


class BadSignatureError(SignatureError):
    """A signature by a trusted key does not verify: the payload or signature was altered."""


class ThresholdError(SignatureError):
    """Fewer distinct trusted keys signed than the role's threshold requires."""


class TrustRootError(SignatureError):
    """A trust root is malformed, expired, or a rotation to a new one is not allowed."""


class SigningKeyError(SignatureError):
    """A workspace signing key is missing, unreadable, or its name is already taken."""


class PackagingError(EdgeshipError):
    """A bundle, wheelhouse or container image could not be built (pip, Docker, inputs)."""


class ReleaseError(EdgeshipError):
    """A release (package, upload, deploy of a model version) cannot go on: its state file, lock or hub disagree."""


class RuntimeFailure(EdgeshipError):
    """A module runtime (Docker, process) failed to create, start or stop a module."""


class TransportError(EdgeshipError):
    """The broker, hub or a serial link could not be reached or misbehaved."""


class UnreachableError(TransportError):
    """A host could not be reached or broke off mid-transfer (refused, reset, timed out, 502/503/504).

    Waiting is the cure: the agent retries after a cool-off and reports the document as in
    progress (202), not failed, so a hub outage never fails a rollout (ADR 0042).
    """


class ProvisioningError(TransportError):
    """The serial provisioning link failed: the peer refused, spoke another version, or went silent."""


class NoAnswerError(ProvisioningError):
    """The peer on the serial link never answered within the retry budget."""


class BundleError(InputError):
    """A provisioning bundle is malformed, too large, or cannot be written on the device."""


class QuantizationError(EdgeshipError):
    """A model could not be quantized within the requested budget."""


class UnsupportedModelError(QuantizationError):
    """The model is not ONNX, cannot be loaded, or holds an op the int8 path does not support."""


class CalibrationDataError(QuantizationError):
    """Calibration or evaluation data does not match the model's input, or is too small."""


class AccuracyBudgetError(QuantizationError):
    """No quantization setting kept the accuracy drop within budget; ``report`` holds every trial."""

    def __init__(self, message: str, report: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}
