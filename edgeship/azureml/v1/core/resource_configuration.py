"""``azureml.core.resource_configuration.ResourceConfiguration``: kept on the model as properties."""

from __future__ import annotations

__all__ = ["ResourceConfiguration"]


class ResourceConfiguration:
    def __init__(self, cpu: float | None = None, memory_in_gb: float | None = None, gpu: int | None = None) -> None:
        self.cpu = cpu
        self.memory_in_gb = memory_in_gb
        self.gpu = gpu

    def serialize(self) -> dict[str, object]:
        return {"cpu": self.cpu, "memoryInGB": self.memory_in_gb, "gpu": self.gpu}
