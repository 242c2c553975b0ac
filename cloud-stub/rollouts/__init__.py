"""Staged rollouts: the policy, the waves and the advance/abort decisions (pure; the engine is planned)."""

from __future__ import annotations

from edgeship.hub.rollouts.decide import Decision, DeviceProgress, Outcome, classify, decide
from edgeship.hub.rollouts.policy import FAILURE_KINDS, RolloutPolicy, WaveSize, parse_duration, parse_waves
from edgeship.hub.rollouts.waves import WavePlan, plan_waves, rollout_order

__all__ = [
    "FAILURE_KINDS",
    "Decision",
    "DeviceProgress",
    "Outcome",
    "RolloutPolicy",
    "WavePlan",
    "WaveSize",
    "classify",
    "decide",
    "parse_duration",
    "parse_waves",
    "plan_waves",
    "rollout_order",
]
