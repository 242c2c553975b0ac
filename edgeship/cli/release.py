"""``edgeship release run|watch``: package, sign, upload and deploy new model versions (continuous deployment).

Thin: the decisions and steps live in :mod:`edgeship.release`; this module turns
options into a :class:`~edgeship.release.ReleaseSpec`, holds the workspace's release
lock and prints one timestamped line per step (docs/release.md).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeship.cli._common import WorkspaceOpt, console, parse_pairs, workspace_from
from edgeship.cli.hub import HubTokenOpt, HubUrlOpt, hub_client
from edgeship.cli.rollout_policy import (
    AbortMinOpt,
    AbortOnOpt,
    AbortPercentOpt,
    AdvancePercentOpt,
    ApproveEachWaveOpt,
    ExponentialOpt,
    GateOpt,
    RolloutFileOpt,
    RolloutOptions,
    SoakOpt,
    SpreadByOpt,
    WavesOpt,
    WaveTimeoutOpt,
)
from edgeship.errors import InputError

if TYPE_CHECKING:
    from edgeship.release import ReleaseSpec

__all__ = ["register", "release_app"]

release_app = typer.Typer(
    help="Continuous deployment: package, sign, upload and roll out each new version of a registered model.",
    no_args_is_help=True,
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registered model NAME.", show_default=False)]
TagOpt = Annotated[list[str] | None, typer.Option(
    "--tag", "-t", help="Only versions with this tag, key=value (repeatable).", show_default=False)]
IcOpt = Annotated[Path | None, typer.Option(
    "--ic", help="Azure ML inferenceconfig.json/.yml; omit for no-code serving.", show_default=False)]
DcOpt = Annotated[Path | None, typer.Option("--dc", help="Azure ML deploymentconfig.json/.yml.", show_default=False)]
DeploymentOpt = Annotated[str, typer.Option(
    "--deployment", "-d", help="Deployment name; version N is released as the hub deployment NAME-vN.",
    show_default=False)]
ConditionOpt = Annotated[str | None, typer.Option(
    "--target-condition", "-c", help="e.g. \"tags.site = 'lab'\" (default: the previous release's; the first "
    "release needs it).", show_default=False)]
PriorityOpt = Annotated[int, typer.Option(
    "--priority", "-p", help="The lowest priority a release gets; each release is one above the previous.")]
KeepOpt = Annotated[int | None, typer.Option(
    "--keep", min=1, help="Delete releases older than the newest K completed ones (default: keep every release).",
    show_default=False)]
ModuleNameOpt = Annotated[str | None, typer.Option(
    "--name", "-n", help="Module name (default: the model's).", show_default=False)]
ImageOpt = Annotated[bool | None, typer.Option(
    "--image/--no-image", help="Build a container image (default: when a Docker engine answers).",
    show_default=False)]
KeyOpt = Annotated[list[str] | None, typer.Option(
    "--key", help="Release key name to sign with (default: all release keys).", show_default=False)]


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    console.print(f"[dim]{stamp}[/] {message}", highlight=False)


def _spec(model: str, deployment: str, tags: list[str] | None, ic: Path | None, dc: Path | None,
          condition: str | None, priority: int, rollout: RolloutOptions, keep: int | None, name: str | None,
          image: bool | None, keys: list[str] | None) -> ReleaseSpec:
    from edgeship.release import PackageOptions, ReleaseSpec

    for label, path in (("--ic", ic), ("--dc", dc)):
        if path is not None and not path.is_file():
            raise InputError(f"{label} {path} is not a file; give the Azure ML config to package with.")
    return ReleaseSpec(
        model=model, deployment=deployment, tags=parse_pairs("tag", tags),
        package=PackageOptions(inference_config=ic, deployment_config=dc, module_name=name, image=image,
                               signing_keys=tuple(keys or ())),
        target_condition=condition, priority=priority, rollout=rollout.policy(), keep=keep,
    )


def _version(text: str) -> int | None:
    if text == "latest":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"--version {text!r} must be a version number from 1, or 'latest'.")
    return int(text)


@release_app.command("run")
def run(
    model: ModelOpt, deployment: DeploymentOpt,
    version: Annotated[str, typer.Option("--version", help="N, or latest: the newest version with the --tag "
                                         "values.")] = "latest",
    tag: TagOpt = None, ic: IcOpt = None, dc: DcOpt = None, target_condition: ConditionOpt = None,
    priority: PriorityOpt = 0, keep: KeepOpt = None, name: ModuleNameOpt = None, image: ImageOpt = None,
    key: KeyOpt = None,
    waves: WavesOpt = None, exponential: ExponentialOpt = None, spread_by: SpreadByOpt = None, soak: SoakOpt = None,
    advance_percent: AdvancePercentOpt = None, approve_each_wave: ApproveEachWaveOpt = None,
    wave_timeout: WaveTimeoutOpt = None, abort_percent: AbortPercentOpt = None, abort_min: AbortMinOpt = None,
    abort_on: AbortOnOpt = None, gate: GateOpt = None, rollout_file: RolloutFileOpt = None,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, workspace: WorkspaceOpt = None,
) -> None:
    """Release one version once (for CI): package and sign it, upload it, create deployment NAME-vN.

    A version released before (its NAME-vN is on the hub) is left alone, so running it again does nothing.
    """
    from edgeship.release import Releaser, RestHub, release_lock

    wanted = _version(version)
    rollout = RolloutOptions(rollout_file, waves, exponential, spread_by, soak, advance_percent, approve_each_wave,
                             wave_timeout, abort_percent, abort_min, abort_on, gate)
    spec = _spec(model, deployment, tag, ic, dc, target_condition, priority, rollout, keep, name, image, key)
    ws = workspace_from(workspace)
    with hub_client(hub, token) as client, release_lock(ws, deployment):
        releaser = Releaser(ws, RestHub(client), spec, _log)
        outcome = releaser.run_once(wanted)
    if outcome.version is None:
        _log(f"nothing to release: {outcome.reason}")


@release_app.command("watch")
def watch(
    model: ModelOpt, deployment: DeploymentOpt,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between looks at the "
                                            "registry.")] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="One look, then exit (as 'release run' with latest).")]
    = False,
    tag: TagOpt = None, ic: IcOpt = None, dc: DcOpt = None, target_condition: ConditionOpt = None,
    priority: PriorityOpt = 0, keep: KeepOpt = None, name: ModuleNameOpt = None, image: ImageOpt = None,
    key: KeyOpt = None,
    waves: WavesOpt = None, exponential: ExponentialOpt = None, spread_by: SpreadByOpt = None, soak: SoakOpt = None,
    advance_percent: AdvancePercentOpt = None, approve_each_wave: ApproveEachWaveOpt = None,
    wave_timeout: WaveTimeoutOpt = None, abort_percent: AbortPercentOpt = None, abort_min: AbortMinOpt = None,
    abort_on: AbortOnOpt = None, gate: GateOpt = None, rollout_file: RolloutFileOpt = None,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, workspace: WorkspaceOpt = None,
) -> None:
    """Release each new version of the model as it is registered, until Ctrl-C or SIGTERM.

    Restart-safe: a version is released once, even when the watch was killed in the middle of it.
    """
    from edgeship.release import Releaser, RestHub, release_lock

    rollout = RolloutOptions(rollout_file, waves, exponential, spread_by, soak, advance_percent, approve_each_wave,
                             wave_timeout, abort_percent, abort_min, abort_on, gate)
    spec = _spec(model, deployment, tag, ic, dc, target_condition, priority, rollout, keep, name, image, key)
    ws = workspace_from(workspace)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with hub_client(hub, token) as client, release_lock(ws, deployment):
            releaser = Releaser(ws, RestHub(client), spec, _log)
            _log(f"watching model {model}{_tags(spec)} every {interval:g} s for deployment {deployment} "
                 f"(hub {client.url})")
            releaser.watch(interval, stop, once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        _log("stopped")


def _tags(spec: ReleaseSpec) -> str:
    tags = spec.tags
    return f" with {', '.join(f'{k}={v}' for k, v in tags.items())}" if tags else ""
