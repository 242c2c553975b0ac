"""What a release pass decides, as plain functions over data: no registry, hub or disk here.

A release of model version N under ``--deployment NAME`` is the hub deployment
``NAME-vN`` (:func:`release_name`). Its priority is above every earlier release of
the same NAME, so layering makes the newest release win per device wave by wave,
and an abort of its rollout leaves each device on the release it had before
(docs/release.md). Invariants the functions keep:

- a version is released at most once: a version whose ``NAME-vN`` exists on the hub,
  or that the state file records as deployed, is never chosen again;
- ``latest`` never goes backwards: a version older than the newest release is not
  chosen (a rollback is an explicit ``--version``);
- pruning deletes only releases older than the newest one that finished, and never
  one whose own rollout still runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgeship.errors import InputError

__all__ = [
    "Choice",
    "ReleaseInfo",
    "choose_version",
    "next_priority",
    "prune",
    "release_name",
    "release_version",
]

FINISHED = ("completed", "aborted")  # rollout states in which a deployment no longer moves devices


def release_name(deployment: str, version: int) -> str:
    """The hub deployment of model version ``version``: ``NAME-vN``."""
    return f"{deployment}-v{version}"


def release_version(deployment: str, name: str) -> int | None:
    """N when ``name`` is ``deployment``'s release ``NAME-vN``, else None (another deployment)."""
    match = re.fullmatch(re.escape(deployment) + r"-v([1-9][0-9]{0,17})", name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ReleaseInfo:
    """One release deployment on the hub. ``rollout``: its rollout state; None when it went out at once."""

    name: str
    version: int
    priority: int
    target_condition: str
    modules: tuple[tuple[str, int], ...]
    rollout: str | None = None

    @property
    def finished(self) -> bool:
        """True once it moves no device any more: no rollout, or a completed or aborted one."""
        return self.rollout is None or self.rollout in FINISHED


@dataclass(frozen=True)
class Choice:
    """The version to release now, or None with the reason nothing is released (one sentence)."""

    version: int | None
    reason: str = ""


def choose_version(
    model: str,
    candidates: Iterable[int],
    released: Iterable[int],
    wanted: int | None = None,
) -> Choice:
    """The version a pass releases.

    ``candidates``: the registered versions that match the tags; ``released``: every
    version released before (hub and state file); ``wanted``: an explicit version,
    None for the latest.
    """
    matching = sorted(set(candidates))
    done = set(released)
    if wanted is not None:
        if wanted not in matching:
            raise InputError(
                f"Model {model}:{wanted} is not registered or does not carry the --tag values; "
                "see 'edgeship model list'."
            )
        if wanted in done:
            return Choice(None, f"{model}:{wanted} is released already")
        return Choice(wanted)
    if not matching:
        return Choice(None, f"no version of {model} matches")
    newest = matching[-1]
    if newest in done:
        return Choice(None, f"{model}:{newest} is released already")
    if done and newest < max(done):
        return Choice(None, f"{model}:{newest} is older than the release of {model}:{max(done)}")
    return Choice(newest)


def next_priority(base: int, earlier: Iterable[ReleaseInfo]) -> int:
    """``base``, or one above the highest earlier release when that is higher: the new release wins layering."""
    return max([base] + [r.priority + 1 for r in earlier])


def prune(releases: Sequence[ReleaseInfo], keep: int) -> list[ReleaseInfo]:
    """The releases to delete so that the newest ``keep`` completed ones remain, counted from the newest.

    The anchor is the newest release that completed (or went out at once). Only releases
    older than it are deleted: completed ones past the ``keep`` newest, and aborted ones.
    A release newer than the anchor (still rolling out, or aborted with the anchor as its
    fallback) and any release whose rollout still runs are never deleted.
    """
    if keep < 1:
        raise InputError(f"--keep {keep} must be at least 1: the release that completed last stays.")
    good = sorted((r for r in releases if r.rollout in (None, "completed")), key=lambda r: r.version, reverse=True)
    if not good:
        return []
    anchor = good[0].version
    kept = {r.version for r in good[:keep]}
    return sorted(
        (r for r in releases if r.version < anchor and r.finished and r.version not in kept),
        key=lambda r: r.version,
    )
