"""How a rollout's devices are doing, and what the rollout does next: advance, wait, abort or complete.

Two pure functions over data, as hawkBit's thresholds and AWS IoT Jobs' abortConfig
decide, so the engine that calls them on a timer and on incoming reports holds no
rule of its own (``docs/rollouts.md``):

- :func:`classify` turns what one device reported about the document that carried
  the release into an outcome: *pending*, *soaking* (applied, not yet for ``soak``
  seconds), *succeeded*, *failed* (500, or rolled back to another version),
  *refused* (a 4xx code; not a 409 that refuses an *older* copy after the release
  applied), or *timed-out* (no report within ``wave_timeout``); a device
  that reports 202 (in progress: its download host was unreachable, it retries) is
  still *pending*, so a hub outage mid-wave fails no device (ADR 0042).
- :func:`decide` looks at every device the rollout has reached: it aborts when at
  least ``abort_min`` of them have executed and more than ``abort_percent`` % of
  those failed in one of the ``abort_on`` ways; otherwise the current wave advances
  once ``advance_percent`` % of it succeeded (waiting for an approval between waves
  when asked), and a wave that does neither within ``wave_timeout`` waits for an
  operator, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from edgeship.hub.rollouts.gates import Verdict
from edgeship.hub.rollouts.policy import RolloutPolicy
from edgeship.hub.rollouts.waves import WavePlan
from edgeship.reported import IN_PROGRESS

__all__ = ["OUTCOMES", "Decision", "DeviceProgress", "Outcome", "classify", "decide"]

REPLAYED = 409  # the agent's code for a document not above its last applied sequence (docs/mqtt.md)

Outcome = Literal["pending", "soaking", "succeeded", "failed", "refused", "timed-out", "unhealthy", "no-data"]
OUTCOMES: tuple[Outcome, ...] = (
    "pending", "soaking", "succeeded", "failed", "refused", "timed-out", "unhealthy", "no-data",
)
EXECUTED: frozenset[str] = frozenset({"succeeded", "failed", "refused", "timed-out", "unhealthy"})
Action = Literal["wait", "advance", "complete", "waiting-approval", "abort"]


@dataclass(frozen=True)
class DeviceProgress:
    """What the hub knows of one device and the document that gave it the release (times in seconds)."""

    issued_sequence: int  # the first document that carried the release to this device
    issued_at: float
    reported_sequence: int | None = None  # lastAppliedSequence of its newest report
    code: int | None = None  # that report's status code
    running_release: bool = False  # its report shows every module of the release running
    applied_at: float | None = None  # when it first reported the release running
    reported_at: float | None = None  # when the hub received that report
    health: Verdict | None = None  # the health gates' verdict while it runs the release (None: no gates)


def classify(progress: DeviceProgress, policy: RolloutPolicy, now: float) -> Outcome:
    """One device's outcome for the release (see the module docstring)."""
    answered = progress.reported_sequence is not None and progress.reported_sequence >= progress.issued_sequence
    if answered and progress.code == REPLAYED:
        # It applied the release's document (or a later one) and then refused an older copy as a replay: one a
        # broker node's loss left retained, or a late duplicate (ADR 0044; the hub sends the newest again). That
        # refusal is not about the release: judge what runs, or wait for the next report.
        if not progress.running_release:
            return "timed-out" if now - progress.issued_at > policy.wave_timeout else "pending"
        progress = replace(progress, code=200)
    if not answered and progress.code is not None and 400 <= progress.code < 500:
        # an agent that refuses a document keeps its lastAppliedSequence (docs/mqtt.md): a 4xx report
        # received after the release was issued is the answer to it
        answered = progress.reported_at is not None and progress.reported_at >= progress.issued_at
    if answered and progress.code is not None and progress.code != IN_PROGRESS:
        if 400 <= progress.code < 500:
            return "refused"
        if progress.code >= 500:
            return "failed"
        if not progress.running_release:
            return "failed"  # applied a later document, but the release is not what runs: rolled back
        if progress.health == "breach":
            return "unhealthy"  # as soon as a gate can judge, even mid-soak
        if progress.applied_at is not None and now - progress.applied_at >= policy.soak:
            return "no-data" if progress.health == "no-data" else "succeeded"
        return "soaking"
    if now - progress.issued_at > policy.wave_timeout:
        return "timed-out"
    return "pending"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    tripped: tuple[str, ...] = ()  # the devices that made the rollout abort


def decide(
    policy: RolloutPolicy,
    plan: WavePlan,
    wave: int,
    outcomes: Mapping[str, Outcome],
    *,
    wave_started: float,
    now: float,
    approved: bool = False,
) -> Decision:
    """What the rollout does next, with wave ``wave`` (0-based) the newest one out."""
    reached = plan.reached(wave)
    executed = [d for d in reached if outcomes.get(d, "pending") in EXECUTED]
    bad = [d for d in executed if outcomes[d] in policy.abort_on]
    if len(executed) >= policy.abort_min and bad and 100 * len(bad) / len(executed) > policy.abort_percent:
        kinds = sorted({outcomes[d] for d in bad})
        return Decision(
            "abort",
            f"{len(bad)} of {len(executed)} executed devices {'/'.join(kinds)} (more than {policy.abort_percent:g}% "
            f"once {policy.abort_min} executed)",
            tuple(sorted(bad)),
        )
    members = plan.waves[wave] if wave < len(plan.waves) else ()
    succeeded = sum(1 for d in members if outcomes.get(d) == "succeeded")
    share = 100 * succeeded / len(members) if members else 100.0
    last = wave >= len(plan.waves) - 1
    label = f"wave {wave + 1} of {len(plan.waves)}"
    if share >= policy.advance_percent:
        if last:
            return Decision("complete", f"{label}: {succeeded} of {len(members)} succeeded")
        if policy.approve_each_wave and not approved:
            return Decision("waiting-approval", f"{label} succeeded ({succeeded} of {len(members)}); "
                                                "approve to start the next wave")
        return Decision("advance", f"{label}: {succeeded} of {len(members)} succeeded")
    if now - wave_started > policy.wave_timeout:
        counts = {kind: sum(1 for d in members if outcomes.get(d, "pending") == kind) for kind in
                  ("succeeded", "soaking", "no-data", "pending", "timed-out", "failed", "refused", "unhealthy")}
        detail = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        return Decision("waiting-approval", f"{label} did not reach {policy.advance_percent:g}% within "
                                            f"{policy.wave_timeout:g} s ({detail}); approve to go on or abort")
    return Decision("wait", f"{label}: {succeeded} of {len(members)} succeeded, {policy.advance_percent:g}% needed")
