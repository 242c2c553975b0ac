"""What the pages show, computed from service records: chart series, signature status, module sizes.

Pure functions over the records the services return, so the pages' numbers can be
tested without a browser. Charts come from the telemetry batches the hub keeps per
device (``Fleet.recent_telemetry``: the newest :data:`CHART_BATCHES`), one series per
module version for requests/s, server-error rate and p50/p99 latency, and one for the
device's CPU and memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edgeship.hub.store import ModuleRecord, TelemetryRecord
from edgeship.signing import MODULE_PAYLOAD_TYPE, TrustRoot
from edgeship.signing.dsse import Envelope
from edgeship.signing.trust import verify_envelope

__all__ = ["CHART_BATCHES", "Chart", "SignatureStatus", "charts", "module_size", "signature_status"]

CHART_BATCHES = 100  # telemetry batches per device the charts read (what the hub keeps, store/telemetry.py)
_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


@dataclass(frozen=True)
class Chart:
    """One chart: x in epoch seconds, a list of ``(label, values)`` with None where a series has no point."""

    key: str
    title: str
    unit: str
    x: list[float]
    series: list[tuple[str, list[float | None]]]

    @property
    def points(self) -> int:
        return sum(1 for _, values in self.series for v in values if v is not None)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "unit": self.unit, "x": self.x,
                "series": [{"label": label, "values": values} for label, values in self.series]}


def _samples(batches: Iterable[TelemetryRecord]) -> list[tuple[float, Mapping[str, Any]]]:
    """Every sample of the batches, by its own time, oldest first, once per (seq, time)."""
    seen: set[tuple[Any, float]] = set()
    out: list[tuple[float, Mapping[str, Any]]] = []
    for record in batches:
        for sample in record.batch.get("samples") or []:
            if not isinstance(sample, Mapping):
                continue
            try:
                when = _TIME.validate_python(sample.get("time")).timestamp()
            except ValidationError:
                continue
            key = (sample.get("seq"), when)
            if key not in seen:
                seen.add(key)
                out.append((when, sample))
    out.sort(key=lambda item: item[0])
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def charts(batches: Iterable[TelemetryRecord]) -> list[Chart]:
    """The device page's charts from its telemetry batches (any order)."""
    samples = _samples(batches)
    x = [when for when, _ in samples]
    n = len(samples)
    per: dict[str, dict[str, list[float | None]]] = {}  # metric -> series label -> values
    device: dict[str, list[float | None]] = {"cpu": [None] * n, "memory": [None] * n}
    previous: dict[str, float] = {}  # series label -> time of its previous sample
    for i, (when, sample) in enumerate(samples):
        device["cpu"][i] = _number(sample.get("cpuPercent"))
        memory = _number(sample.get("memoryBytes"))
        device["memory"][i] = memory / (1024 * 1024) if memory is not None else None
        modules = sample.get("modules")
        for name, entry in (modules.items() if isinstance(modules, Mapping) else ()):
            if not isinstance(entry, Mapping):
                continue
            version = entry.get("version")
            label = f"{name} v{version}" if isinstance(version, int) else str(name)
            requests = _number(entry.get("requests")) or 0.0
            server = _number(entry.get("serverErrors"))
            errors = server if server is not None else _number(entry.get("errors"))
            raw_latency = entry.get("latencyMs")
            latency: Mapping[str, Any] = raw_latency if isinstance(raw_latency, Mapping) else {}
            since = previous.get(label)
            previous[label] = when
            values = {
                "rps": requests / (when - since) if since is not None and when > since else None,
                "errors": (errors or 0.0) / requests if requests else None,
                "p50": _number(latency.get("p50")) if requests else None,
                "p99": _number(latency.get("p99")) if requests else None,
            }
            for metric, value in values.items():
                per.setdefault(metric, {}).setdefault(label, [None] * n)[i] = value
    def series(metric: str, suffix: str = "") -> list[tuple[str, list[float | None]]]:
        return [(label + suffix, values) for label, values in sorted(per.get(metric, {}).items())]

    return [
        Chart("rps", "Requests per second", "req/s", x, series("rps")),
        Chart("errors", "Server-error rate", "errors/request", x, series("errors")),
        Chart("latency", "Latency p50 / p99", "ms", x, series("p50", " p50") + series("p99", " p99")),
        Chart("cpu", "CPU", "%", x, [("device", device["cpu"])]),
        Chart("memory", "Memory", "MiB", x, [("device", device["memory"])]),
    ]


@dataclass(frozen=True)
class SignatureStatus:
    signers: tuple[str, ...]  # key ids (short) of the release keys whose signature verifies
    threshold: int
    met: bool
    problem: str  # why not, when not met


def signature_status(module: ModuleRecord, trust_root: TrustRoot) -> SignatureStatus:
    """Who signed the module among the trust root's release keys, and whether their threshold is met now."""
    role = trust_root.role("release")
    signers: list[str] = []
    try:
        envelope = Envelope.from_json(_json(module.envelope))
        message = envelope.pae()
        trusted = trust_root.role_keys("release")
        for signature in envelope.signatures:
            key = trusted.get(signature.keyid) if signature.keyid else None
            if key is not None and key.verify(signature.sig, message) and key.keyid[:12] not in signers:
                signers.append(key.keyid[:12])
        verify_envelope(envelope, trust_root, "release", MODULE_PAYLOAD_TYPE)
    except Exception as exc:  # any refusal is shown as it is: this page only reports
        return SignatureStatus(tuple(signers), role.threshold, False, str(exc))
    return SignatureStatus(tuple(signers), role.threshold, True, "")


def module_size(module: ModuleRecord) -> int | None:
    """The artifacts' bytes as the signed manifest lists them (None when it cannot be read)."""
    try:
        envelope = Envelope.from_json(_json(module.envelope))
        manifest = json.loads(envelope.payload)
        return sum(int(f.get("size", 0)) for f in manifest.get("files", []) if isinstance(f, Mapping))
    except Exception:  # shown as unknown
        return None


def module_models(module: ModuleRecord) -> list[Mapping[str, Any]]:
    """The models the signed manifest pins (name, version, framework, digest)."""
    try:
        manifest = json.loads(Envelope.from_json(_json(module.envelope)).payload)
        return [m for m in manifest.get("models", []) if isinstance(m, Mapping)]
    except Exception:  # shown as none
        return []


def _json(envelope: Mapping[str, Any]) -> str:
    return json.dumps(dict(envelope))
