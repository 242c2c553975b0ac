"""The telemetry batch an agent publishes on ``edgeship/v1/devices/{id}/telemetry`` (schemaVersion 1 or 2).

::

    {"schemaVersion": 2, "deviceId": "dev-1", "dropped": 0,
     "samples": [{"time": "2026-01-01T00:00:00Z", "seq": 41, "cpuPercent": 12.5, "memoryBytes": 73400320,
                  "modules": {"digits": {"version": 3, "requests": 120, "errors": 2,
                                         "serverErrors": 1, "clientErrors": 1,
                                         "latencyMs": {"p50": 3.1, "p95": 7.9, "p99": 12.0}}}}]}

``dropped`` counts samples the agent's disk buffer discarded while offline. Version 2
(ADR 0024) adds, per module, the module ``version`` the sample measured and the errors
split into ``serverErrors`` (status 500 and above) and ``clientErrors`` (400-499);
``errors`` stays every status of 400 or more. The three are optional in version 2 (a
sample queued on disk by an older agent has none of them; the split comes as a pair)
and refused in version 1, which is exactly what agents before it send. The hub refuses
any other shape (unknown keys included, module names that are not
``edgeship.reported.ModuleName``), so what is stored is what ``docs/mqtt.md``
documents. The bridge has already bounded the batch's size (``bridge/limits.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeship.errors import InputError
from edgeship.reported import ModuleName, clip

__all__ = [
    "MAX_SAMPLES",
    "SCHEMA_VERSIONS",
    "LatencyMs",
    "ModuleSample",
    "ModuleSampleV2",
    "Sample",
    "SampleV2",
    "TelemetryBatch",
    "TelemetryBatchV2",
    "parse_telemetry",
]

SCHEMA_VERSIONS = (1, 2)
MAX_SAMPLES = 1000  # samples per batch
MAX_MODULES = 64  # modules per sample
MAX_COUNT = 10**12  # requests or errors in one sample: far above any server's rate, and sums stay in 63 bits
MAX_LATENCY_MS = 86_400_000.0  # a day; the agent's histogram tops out at 10 s
MAX_VERSION = 2**31 - 1  # module versions are 32-bit integers in the hub's tables


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)  # JSON has no inf


class LatencyMs(_Strict):
    p50: float = Field(ge=0, le=MAX_LATENCY_MS)
    p95: float = Field(ge=0, le=MAX_LATENCY_MS)
    p99: float = Field(ge=0, le=MAX_LATENCY_MS)


class ModuleSample(_Strict):
    requests: int = Field(ge=0, le=MAX_COUNT)
    errors: int = Field(ge=0, le=MAX_COUNT)
    latency_ms: LatencyMs = Field(alias="latencyMs")


class ModuleSampleV2(ModuleSample):
    """Version 2: which module version was measured, and its errors split by who caused them."""

    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    server_errors: int | None = Field(default=None, alias="serverErrors", ge=0, le=MAX_COUNT)
    client_errors: int | None = Field(default=None, alias="clientErrors", ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _split_adds_up(self) -> ModuleSampleV2:
        if (self.server_errors is None) != (self.client_errors is None):
            raise ValueError("serverErrors and clientErrors come together")
        if (self.server_errors or 0) + (self.client_errors or 0) > self.errors:
            raise ValueError("serverErrors + clientErrors must not exceed errors")
        return self


class Sample(_Strict):
    time: datetime
    seq: int = Field(ge=0)
    cpu_percent: float = Field(alias="cpuPercent", ge=0)
    memory_bytes: int = Field(alias="memoryBytes", ge=0)
    modules: dict[ModuleName, ModuleSample] = Field(default_factory=dict, max_length=MAX_MODULES)


class SampleV2(Sample):
    modules: dict[ModuleName, ModuleSampleV2] = Field(  # type: ignore[assignment]  # a v2 entry is a v1 entry plus
        default_factory=dict, max_length=MAX_MODULES)


class TelemetryBatch(_Strict):
    schema_version: Literal[1] = Field(alias="schemaVersion")
    device_id: str = Field(alias="deviceId", min_length=1, max_length=128)
    samples: list[Sample] = Field(max_length=MAX_SAMPLES)
    dropped: int = Field(default=0, ge=0)


class TelemetryBatchV2(TelemetryBatch):
    schema_version: Literal[2] = Field(alias="schemaVersion")  # type: ignore[assignment]
    samples: list[SampleV2] = Field(max_length=MAX_SAMPLES)  # type: ignore[assignment]


def parse_telemetry(data: Any) -> TelemetryBatch:
    """Validate a decoded batch of either schema version; an InputError names the first bad field."""
    if not isinstance(data, dict):
        raise InputError("A telemetry batch must be a JSON object.")
    version = data.get("schemaVersion")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        raise InputError(f"Telemetry batch field schemaVersion: must be one of {', '.join(map(str, SCHEMA_VERSIONS))} "
                         f"(got {clip(repr(version), 40)}); upgrade the hub to read newer agents' telemetry.")
    try:
        return (TelemetryBatchV2 if version == 2 else TelemetryBatch).model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = clip(".".join(str(p) for p in first["loc"]), 200) or "batch"  # a key may be any length
        raise InputError(f"Telemetry batch field {where}: {first['msg']}.") from exc
