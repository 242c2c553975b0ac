"""A module's ``cpu``/``memoryInGB`` taken from a stored profile (``edgeship package --resources-from-profile``).

The profile must be one made of exactly the module's models (``edgeship model
profile`` stores the same profile on each of them). A recommendation the profile
does not have (no ``cpu`` from the process runtime, or no memory candidate that
fit) leaves the deployment config's value and says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgeship.errors import InputError

if TYPE_CHECKING:
    from edgeship.registry import Model

__all__ = ["resources_from_profile"]

PROFILE_PROPERTY = "edgeship.profile"  # as edgeship.profiling.profile; repeated so the packager imports nothing more


def resources_from_profile(
    models: Sequence[Model], cpu: float | None, memory_gb: float | None
) -> tuple[float | None, float | None, list[str]]:
    """``(cpu, memory_gb, warnings)``: the profile's recommendations where it has them, else the given values."""
    wanted = sorted(m.id for m in models)
    texts = {m.properties.get(PROFILE_PROPERTY) for m in models}
    profile = None
    if len(texts) == 1 and None not in texts:
        profile = json.loads(texts.pop() or "{}")
    if profile is None or sorted(profile.get("models", [])) != wanted:
        raise InputError(
            f"--resources-from-profile needs a profile of exactly {', '.join(wanted)}; make one with "
            f"'edgeship model profile {' '.join('-m ' + w for w in wanted)} --input-data SAMPLES'."
        )
    warnings = []
    made = f"profile of {profile.get('createdTime', '?')} ({profile.get('runtime', '?')} runtime)"
    recommended_cpu, recommended_memory = profile.get("recommendedCpu"), profile.get("recommendedMemoryInGB")
    if recommended_cpu is None:
        warnings.append(f"the {made} recommends no cpu; cpu stays {cpu if cpu is not None else 'unset'}")
    if recommended_memory is None:
        kept = memory_gb if memory_gb is not None else "unset"
        warnings.append(f"the {made} recommends no memoryInGB; it stays {kept}")
    new_cpu = float(recommended_cpu) if recommended_cpu is not None else cpu
    new_memory = float(recommended_memory) if recommended_memory is not None else memory_gb
    if (new_cpu, new_memory) != (cpu, memory_gb):
        warnings.append(f"cpu {new_cpu} and memoryInGB {new_memory} come from the {made}")
    return new_cpu, new_memory, warnings
