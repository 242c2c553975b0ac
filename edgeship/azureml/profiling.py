"""``Model.profile`` on :func:`edgeship.profiling.profile_model` (issue 20), returning an Azure-like ModelProfile.

Azure profiled with a registered tabular ``Dataset`` of request bodies, which the layer
refuses; here ``input_dataset`` is what a script can have without Azure: a JSON-lines
file of request bodies (a path), or the bodies themselves (a list of str or bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.errors import EdgeshipError

from .v1.exceptions import UserErrorException, WebserviceException, refuse

if TYPE_CHECKING:
    from edgeship.profiling import ProfileResult

    from .v1.core.model import InferenceConfig, Model
    from .v1.core.workspace import Workspace

__all__ = ["ModelProfile", "profile"]


class ModelProfile:
    """What ``Model.profile`` returns: finished already; ``get_details()`` has Azure's keys."""

    def __init__(self, name: str, result: ProfileResult) -> None:
        self.name = name
        self._result = result
        self.state = "Succeeded"

    @property
    def recommended_cpu(self) -> float | None:
        return self._result.recommended_cpu

    @property
    def recommended_memory(self) -> float | None:
        return self._result.recommended_memory

    def wait_for_completion(self, show_output: bool = False) -> None:
        if show_output:
            print(f"Profile {self.name}: recommended cpu {self.recommended_cpu}, memoryInGB {self.recommended_memory}")

    def get_details(self) -> dict[str, Any]:
        return {"name": self.name, **self._result.to_json()}

    def serialize(self) -> dict[str, Any]:
        return self.get_details()


def _bodies(input_dataset: Any) -> Path | list[bytes]:
    if isinstance(input_dataset, str | os.PathLike):
        return Path(input_dataset)
    if isinstance(input_dataset, Sequence) and input_dataset and all(
            isinstance(b, str | bytes) for b in input_dataset):
        return [b.encode() if isinstance(b, str) else bytes(b) for b in input_dataset]
    raise refuse("Model.profile(input_dataset=<Dataset>)", "pass the path of a JSON-lines file of request bodies, "
                 "or a list of request bodies (str or bytes)")


def profile(workspace: Workspace, profile_name: str, models: Sequence[Model], inference_config: InferenceConfig | None,
            input_dataset: Any, cpu: float | None = None, memory_in_gb: float | None = None) -> ModelProfile:
    from edgeship.profiling import profile_model
    from edgeship.profiling.profile import DEFAULT_CPU_CANDIDATES, DEFAULT_MEMORY_CANDIDATES

    if not models:
        raise UserErrorException("Model.profile(models=...) takes a list of registered Model objects.")
    bodies = _bodies(input_dataset)
    scratch = Path(tempfile.mkdtemp(dir=workspace.edgeship.tmp_dir, prefix="azureml-profile-"))
    try:
        ic = None
        if inference_config is not None:
            ic = scratch / "inferenceconfig.json"
            ic.write_text(json.dumps(inference_config.to_file(), indent=2))
        result = profile_model(
            workspace.edgeship, [m.id for m in models], bodies, inference_config=ic,
            cpu_candidates=[cpu] if cpu else DEFAULT_CPU_CANDIDATES,
            memory_candidates=[memory_in_gb] if memory_in_gb else DEFAULT_MEMORY_CANDIDATES,
        )
    except EdgeshipError as exc:
        raise WebserviceException(f"Profiling {profile_name} failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ModelProfile(profile_name, result)
