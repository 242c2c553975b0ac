"""The rollout options of ``edgeship deployment create``, turned into a policy before any request is sent.

The options are issue 14's names (``docs/rollouts.md``); ``--rollout-file`` holds the
same policy as a YAML or JSON mapping with the camelCase keys REST takes. Options
override the file key by key; ``--waves`` and ``--exponential`` are one choice, so
either on the command line replaces both of the file's. The policy is checked here by
``RolloutPolicy.from_dict``, the hub's own rule, so a bad value fails at once and the
error names the option, or the file and its key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeship.errors import InputError
from edgeship.hub.rollouts.policy import RolloutPolicy, parse_duration

__all__ = [
    "OPTION_FOR_KEY",
    "AbortMinOpt",
    "AbortOnOpt",
    "AbortPercentOpt",
    "AdvancePercentOpt",
    "ApproveEachWaveOpt",
    "ExponentialOpt",
    "GateOpt",
    "RolloutFileOpt",
    "RolloutOptions",
    "SoakOpt",
    "SpreadByOpt",
    "WaveTimeoutOpt",
    "WavesOpt",
    "read_policy_file",
]

PANEL = "Rollout in waves (default: every targeted device at once)"
OPTION_FOR_KEY = {
    "waves": "--waves", "exponential": "--exponential", "spreadBy": "--spread-by", "soak": "--soak",
    "advancePercent": "--advance-percent", "approveEachWave": "--approve-each-wave", "waveTimeout": "--wave-timeout",
    "abortPercent": "--abort-percent", "abortMin": "--abort-min", "abortOn": "--abort-on", "gates": "--gate",
}

WavesOpt = Annotated[str | None, typer.Option(
    "--waves", metavar="SIZES", rich_help_panel=PANEL, show_default=False,
    help="Cumulative wave sizes, each a device count or a % of the devices targeted at the start: 1,10%,50%,100%. "
         "Default: no waves, every targeted device at once.")]
ExponentialOpt = Annotated[str | None, typer.Option(
    "--exponential", metavar="BASE,FACTOR", rich_help_panel=PANEL, show_default=False,
    help="Waves that grow: BASE devices first, each next wave FACTOR times the previous (2,2). Instead of --waves.")]
SpreadByOpt = Annotated[str | None, typer.Option(
    "--spread-by", metavar="TAG", rich_help_panel=PANEL, show_default=False,
    help="Spread each wave over a tag's values as far as its size allows: tags.site.")]
SoakOpt = Annotated[str | None, typer.Option(
    "--soak", metavar="DURATION", rich_help_panel=PANEL, show_default=False,
    help="How long a wave's devices must keep running the release after applying it: 30s, 5m, 2h. Default 0.")]
AdvancePercentOpt = Annotated[float | None, typer.Option(
    "--advance-percent", metavar="P", rich_help_panel=PANEL, show_default=False,
    help="Share of a wave that must have succeeded before the next starts. Default 100.")]
ApproveEachWaveOpt = Annotated[bool | None, typer.Option(
    "--approve-each-wave/--no-approve-each-wave", rich_help_panel=PANEL, show_default=False,
    help="Wait for 'edgeship deployment approve NAME' between waves. Default: off.")]
WaveTimeoutOpt = Annotated[str | None, typer.Option(
    "--wave-timeout", metavar="DURATION", rich_help_panel=PANEL, show_default=False,
    help="A wave that neither advances nor aborts by then stops in waiting-approval, with the reason; a device "
         "silent that long is timed-out. Default 30m.")]
AbortPercentOpt = Annotated[float | None, typer.Option(
    "--abort-percent", metavar="P", rich_help_panel=PANEL, show_default=False,
    help="Abort (and roll every reached device back) when more than P % of the devices that executed failed in "
         "an --abort-on way. Default: abort on the first failed, refused or unhealthy device (P 0, --abort-min 1).")]
AbortMinOpt = Annotated[int | None, typer.Option(
    "--abort-min", metavar="N", rich_help_panel=PANEL, show_default=False,
    help="... once at least N devices have executed. Default 1.")]
AbortOnOpt = Annotated[str | None, typer.Option(
    "--abort-on", metavar="KINDS", rich_help_panel=PANEL, show_default=False,
    help="Outcomes that count towards the abort: failed,refused,timed-out,unhealthy. Default "
         "failed,refused,unhealthy: timed-out (offline) devices are reported but do not abort.")]
GateOpt = Annotated[list[str] | None, typer.Option(
    "--gate", metavar="GATE", rich_help_panel=PANEL, show_default=False,
    help="A health gate judged per device from the model's own telemetry, repeatable: \"error_rate <= 1%\" (5xx "
         "share), \"p99_ratio <= 1.5\" (p99 latency against the previous version on the same device), "
         "\"restarts <= 2\"; optional 'over 5m' (window, default since the device applied) and 'min 20' (requests "
         "needed, default 20). A breach makes the device unhealthy; too little data is 'no data', never healthy.")]
RolloutFileOpt = Annotated[Path | None, typer.Option(
    "--rollout-file", metavar="FILE", rich_help_panel=PANEL, show_default=False,
    help="A policy file, YAML or JSON: a mapping with the keys waves, exponential, spreadBy, soak, advancePercent, "
         "approveEachWave, waveTimeout, abortPercent, abortMin, abortOn, gates. Options override its keys.")]


@dataclass(frozen=True)
class RolloutOptions:
    """The rollout options as typed; None: not given (the file's key, or the policy's default, holds)."""

    file: Path | None = None
    waves: str | None = None
    exponential: str | None = None
    spread_by: str | None = None
    soak: str | None = None
    advance_percent: float | None = None
    approve_each_wave: bool | None = None
    wave_timeout: str | None = None
    abort_percent: float | None = None
    abort_min: int | None = None
    abort_on: str | None = None
    gates: list[str] | None = None

    def given(self) -> dict[str, Any]:
        """The options given on the command line, as policy keys; durations and lists parsed, naming the option."""
        given: dict[str, Any] = {
            "waves": self.waves, "spreadBy": self.spread_by, "advancePercent": self.advance_percent,
            "approveEachWave": self.approve_each_wave, "abortPercent": self.abort_percent, "abortMin": self.abort_min,
        }
        if self.exponential is not None:
            given["exponential"] = _exponential(self.exponential)
        if self.soak is not None:
            given["soak"] = parse_duration(self.soak, "--soak")
        if self.wave_timeout is not None:
            given["waveTimeout"] = parse_duration(self.wave_timeout, "--wave-timeout")
        if self.abort_on is not None:
            given["abortOn"] = [kind.strip() for kind in self.abort_on.split(",") if kind.strip()]
        if self.gates:
            given["gates"] = list(self.gates)
        return {key: value for key, value in given.items() if value is not None}

    def policy(self) -> dict[str, Any] | None:
        """The policy to send (``RolloutPolicy.to_dict()``), or None when no rollout option was given."""
        from_file = read_policy_file(self.file) if self.file is not None else {}
        given = self.given()
        if not from_file and not given:
            return None
        if {"waves", "exponential"} & set(given):
            from_file = {k: v for k, v in from_file.items() if k not in ("waves", "exponential")}
        merged = {**from_file, **given}
        try:
            policy = RolloutPolicy.from_dict(merged)
        except (InputError, OverflowError) as exc:
            culprit = _culprit(merged, given, self.file)
            if culprit is not None:
                raise culprit from exc
            if isinstance(exc, InputError):
                raise
            raise InputError(f"The rollout policy is not valid ({exc}).") from exc
        if not policy.staged:
            named = ", ".join(OPTION_FOR_KEY[k] for k in given) or f"the keys of {self.file}"
            raise InputError(
                f"A rollout needs waves: add --waves or --exponential to {named} "
                "(without them every targeted device gets the deployment at once)."
            )
        return policy.to_dict()


def read_policy_file(path: Path) -> dict[str, Any]:
    """A rollout file's mapping; one clear error naming the file when it is unreadable, not a mapping, or has
    unknown keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read rollout file {path} ({exc}).") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"Rollout file {path} is not valid JSON ({exc}).") from exc
    else:
        try:
            import yaml
        except ModuleNotFoundError:
            raise InputError(
                f"Reading the YAML rollout file {path} needs PyYAML (pip install pyyaml); or write it as .json."
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"Rollout file {path} is not valid YAML ({exc}).".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise InputError(
            f"Rollout file {path} must be a mapping of rollout options (waves: 1,10%,100%), not "
            f"{type(data).__name__}."
        )
    unknown = sorted(str(k) for k in set(data) - set(OPTION_FOR_KEY))
    if unknown:
        raise InputError(f"Rollout file {path} has unknown keys {unknown}; use {sorted(OPTION_FOR_KEY)}.")
    for key, value in data.items():
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise InputError(f"Rollout file {path}, key {key}: {value!r} is not a finite number.")
    return data


def _exponential(text: str) -> list[float]:
    base, sep, factor = text.partition(",")
    try:
        if not sep:
            raise ValueError(text)
        return [int(base), float(factor)]
    except ValueError:
        raise InputError(f"--exponential {text!r} must be BASE,FACTOR: a device count and a growth factor, "
                         "such as 2,2.") from None


def _culprit(merged: dict[str, Any], given: dict[str, Any], file: Path | None) -> InputError | None:
    """The error of the one key that is wrong alone, naming its option, or the file and the key."""
    for key, value in merged.items():
        try:
            RolloutPolicy.from_dict({key: value})
        except (InputError, OverflowError) as alone:
            if key in given:  # the policy's messages name the option already
                return alone if isinstance(alone, InputError) else InputError(f"{OPTION_FOR_KEY[key]}: {alone}.")
            return InputError(f"Rollout file {file}, key {key}: {alone}")
    return None
