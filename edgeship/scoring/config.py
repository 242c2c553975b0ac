"""What one scoring service runs: a dataclass that travels to worker processes as JSON.

The CLI (or the agent, or a container's entry point) builds a :class:`ServiceConfig`;
``server.py`` hands it to each worker through the ``EDGESHIP_SCORING_CONFIG``
environment variable, so a worker needs nothing but its environment to start.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeship.errors import ConfigError

__all__ = ["DEFAULT_PROVIDERS", "ENV_CONFIG", "ServiceConfig"]

ENV_CONFIG = "EDGESHIP_SCORING_CONFIG"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class ServiceConfig:
    """One scoring service. Paths are absolute once :meth:`resolved` has run.

    Invariant: ``entry_script`` is set, or the model root holds exactly one model
    (no-code serving).
    """

    model_root: str  # folder that contains azureml-models/ (may be empty of models)
    data_dir: str  # where the data collector and other service state write
    entry_script: str | None = None
    source_dir: str | None = None
    name: str | None = None  # v2 model name; defaults to the model's or the script's
    host: str = "127.0.0.1"
    port: int = 5001
    workers: int = 1
    auth_keys: tuple[str, ...] = ()
    ssl_cert: str | None = None
    ssl_key: str | None = None
    providers: tuple[str, ...] = DEFAULT_PROVIDERS  # ONNX Runtime execution providers, in preference order
    max_body_bytes: int = 100 * 1024 * 1024  # bytes; larger requests get 413
    error_details: bool = False  # 5xx bodies carry the exception text; off: a generic body and a request id
    extra_env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        try:
            raw: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"The scoring configuration is not valid JSON ({exc}).") from exc
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"Unknown scoring configuration keys {unknown}; upgrade edgeship or remove them."
            )
        for key in ("auth_keys", "providers"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    @classmethod
    def from_env(cls) -> ServiceConfig:
        text = os.environ.get(ENV_CONFIG)
        if not text:
            raise ConfigError(f"{ENV_CONFIG} is not set; start workers with 'edgeship serve'.")
        return cls.from_json(text)

    @property
    def models_dir(self) -> Path:
        return Path(self.model_root) / "azureml-models"

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_cert else "http"
