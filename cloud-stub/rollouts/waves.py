"""Which devices are in which wave: deterministic, stable, and spread over a tag when asked.

A device's place in the rollout order is the sha256 of the deployment name and its
id, so the order is the same on every hub replica and after a restart, a device
keeps its wave when others join or leave the target, and two deployments do not
always pick the same devices first. ``spread_by`` interleaves the tag's values
(round-robin over each value's own hash order), so the first waves reach as many
sites as their size allows rather than the first site's devices only.

Pure: devices and tags in, waves out (``docs/rollouts.md``).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from edgeship.hub.rollouts.policy import RolloutPolicy

__all__ = ["WavePlan", "plan_waves", "rollout_order"]


def _rank(deployment: str, device_id: str) -> bytes:
    return hashlib.sha256(f"{deployment}\0{device_id}".encode()).digest()


def rollout_order(
    deployment: str, devices: Iterable[str], tags: Mapping[str, Mapping[str, object]] | None = None,
    spread_by: str | None = None,
) -> list[str]:
    """Every device once, in the order the rollout reaches them."""
    ordered = sorted(set(devices), key=lambda d: _rank(deployment, d))
    if spread_by is None:
        return ordered
    key = spread_by.removeprefix("tags.")
    groups: dict[str, list[str]] = {}
    for device in ordered:
        value = (tags or {}).get(device, {}).get(key)
        groups.setdefault("" if value is None else str(value), []).append(device)
    # values in the hash order of their own name, so no site is always first
    lanes = [groups[v] for v in sorted(groups, key=lambda v: _rank(deployment, "tag:" + v))]
    out: list[str] = []
    for index in range(max((len(lane) for lane in lanes), default=0)):
        out.extend(lane[index] for lane in lanes if index < len(lane))
    return out


@dataclass(frozen=True)
class WavePlan:
    """The waves of one rollout: ``waves[i]`` are the devices wave ``i`` adds (disjoint, in order)."""

    waves: tuple[tuple[str, ...], ...]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {device: index for index, members in enumerate(self.waves) for device in members}

    def wave_of(self, device_id: str) -> int | None:
        return self._index.get(device_id)

    def wave_for_newcomer(self, deployment: str, device_id: str) -> int:
        """The wave of a device that joined the target after the rollout started.

        It takes the wave of the first planned device ranked after it, so newcomers
        are spread over the waves as the original devices were (the last wave if
        none ranks after it). A planned device keeps its own wave.
        """
        known = self.wave_of(device_id)
        if known is not None:
            return known
        planned = self._ranked(deployment)
        at = bisect.bisect_left(planned, (_rank(deployment, device_id), -1))
        return planned[at][1] if at < len(planned) else max(len(self.waves) - 1, 0)

    def _ranked(self, deployment: str) -> list[tuple[bytes, int]]:
        """The planned devices' ranks in order, with their waves (sorted once per plan and deployment)."""
        cache: dict[str, list[tuple[bytes, int]]] = self.__dict__.setdefault("_ranked_cache", {})
        if deployment not in cache:
            cache[deployment] = sorted((_rank(deployment, d), i) for d, i in self._index.items())
        return cache[deployment]

    def reached(self, wave: int) -> tuple[str, ...]:
        """Every device in waves ``0..wave``."""
        return tuple(d for members in self.waves[: wave + 1] for d in members)


def plan_waves(
    policy: RolloutPolicy, deployment: str, devices: Iterable[str],
    tags: Mapping[str, Mapping[str, object]] | None = None,
) -> WavePlan:
    """Split the targeted ``devices`` into the policy's cumulative waves."""
    order = rollout_order(deployment, devices, tags, policy.spread_by)
    waves: list[tuple[str, ...]] = []
    start = 0
    for end in policy.sizes(len(order)):
        waves.append(tuple(order[start:end]))
        start = end
    return WavePlan(tuple(waves))
