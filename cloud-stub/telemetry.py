"""The telemetry batch an agent publishes on ``edgeship/v1/devices/{id}/telemetry`` (schemaVersion 1).

::

    {"schemaVersion": 1, "deviceId": "dev-1", "dropped": 0,
     "samples": [{"time": "2026-01-01T00:00:00Z", "seq": 41, "cpuPercent": 12.5, "memoryBytes": 73400320,
                  "modules": {"digits": {"requests": 120, "errors": 0,
                                         "latencyMs": {"p50": 3.1, "p95": 7.9, "p99": 12.0}}}}]}

``dropped`` counts samples the agent's disk buffer discarded while offline. The
hub refuses any other shape (unknown keys included, module names that are not
``edgeship.reported.ModuleName``), so what is stored is what ``docs/mqtt.md``
documents. The bridge has already bounded the batch's size (``bridge/limits.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeship.errors import InputError
from edgeship.reported import ModuleName, clip

__all__ = ["MAX_SAMPLES", "LatencyMs", "ModuleSample", "Sample", "TelemetryBatch", "parse_telemetry"]

MAX_SAMPLES = 1000  # samples per batch
MAX_MODULES = 64  # modules per sample


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)  # JSON has no inf


class LatencyMs(_Strict):
    p50: float = Field(ge=0)
    p95: float = Field(ge=0)
    p99: float = Field(ge=0)


class ModuleSample(_Strict):
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    latency_ms: LatencyMs = Field(alias="latencyMs")


class Sample(_Strict):
    time: datetime
    seq: int = Field(ge=0)
    cpu_percent: float = Field(alias="cpuPercent", ge=0)
    memory_bytes: int = Field(alias="memoryBytes", ge=0)
    modules: dict[ModuleName, ModuleSample] = Field(default_factory=dict, max_length=MAX_MODULES)


class TelemetryBatch(_Strict):
    schema_version: Literal[1] = Field(alias="schemaVersion")
    device_id: str = Field(alias="deviceId", min_length=1, max_length=128)
    samples: list[Sample] = Field(max_length=MAX_SAMPLES)
    dropped: int = Field(default=0, ge=0)


def parse_telemetry(data: Any) -> TelemetryBatch:
    """Validate a decoded batch; an InputError names the first bad field."""
    if not isinstance(data, dict):
        raise InputError("A telemetry batch must be a JSON object.")
    try:
        return TelemetryBatch.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = clip(".".join(str(p) for p in first["loc"]), 200) or "batch"  # a key may be any length
        raise InputError(f"Telemetry batch field {where}: {first['msg']}.") from exc
