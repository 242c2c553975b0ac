"""Continuous release of a registered model: one pass (``release run``) and a polling loop (``release watch``).

A pass reads the registry (versions of the model with the tags), the hub (the
``NAME-vN`` release deployments) and the state file, lets :mod:`edgeship.release.plan`
choose a version, and takes that version through the steps of
:mod:`edgeship.release.steps`, recording each finished step in the state file before
the next starts. Whatever kills it (SIGKILL included), the next pass resumes: the hub's
``NAME-vN`` says the version is released (nothing is done again), a module recorded or
stored since packaging started is reused (not packaged again), and the upload and the
deployment are idempotent on the hub. Every finished step is one log line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from edgeship.errors import EdgeshipError, InputError, ModelNotFoundError, TransportError
from edgeship.modules.store import ModuleStore, StoredModule, UnknownModuleError
from edgeship.registry import Model, ModelRef, validate_model_name
from edgeship.release.hub import HubDeployment, ReleaseHub, as_release
from edgeship.release.plan import ReleaseInfo, choose_version, next_priority, prune, release_name
from edgeship.release.state import ReleaseState, VersionEntry
from edgeship.release.steps import PackageOptions, deploy, fault_point, package, packaged_since, upload
from edgeship.workspace import Workspace

__all__ = ["Log", "PassResult", "ReleaseSpec", "Releaser"]

Log = Callable[[str], None]
MAX_DEPLOYMENT_NAME = 128  # characters of a hub deployment name


@dataclass(frozen=True)
class ReleaseSpec:
    """What to release and how: the options of ``edgeship release run|watch``."""

    model: str
    deployment: str
    tags: Mapping[str, str] = field(default_factory=dict)
    package: PackageOptions = field(default_factory=PackageOptions)
    target_condition: str | None = None  # None: the previous release's
    priority: int = 0  # the lowest priority a release gets; each is above the previous
    rollout: Mapping[str, Any] | None = None  # a staged policy (RolloutPolicy.to_dict()), None: all at once
    keep: int | None = None  # delete completed releases past the newest ``keep``; None: keep every release

    def __post_init__(self) -> None:
        validate_model_name(self.model)
        validate_model_name(self.deployment)  # a hub deployment name's alphabet; it also names the state file
        if len(self.deployment) > MAX_DEPLOYMENT_NAME - 12:
            raise InputError(f"--deployment {self.deployment!r} is too long: a release adds '-vN' and a hub "
                             f"deployment name has at most {MAX_DEPLOYMENT_NAME} characters.")
        if self.keep is not None and self.keep < 1:
            raise InputError(f"--keep {self.keep} must be at least 1: the release that completed last stays.")


@dataclass(frozen=True)
class PassResult:
    """What a pass did: the version released (or found released), or None and why nothing was done."""

    version: int | None
    deployment: HubDeployment | None = None
    reason: str = ""


class Releaser:
    """Releases versions of one model under one deployment name; hold :func:`release_lock` around its use."""

    def __init__(self, workspace: Workspace, hub: ReleaseHub, spec: ReleaseSpec, log: Log,
                 console: Console | None = None) -> None:
        self.workspace = workspace.require()
        self.hub = hub
        self.spec = spec
        self.log = log
        self.console = console or Console(quiet=True)  # the packager's spinners

    # --- reading -------------------------------------------------------------------------------
    def releases(self, *, with_rollouts: bool = False) -> list[ReleaseInfo]:
        """The hub's release deployments of this deployment name, oldest first.

        The hub's listing carries no rollout state; ``with_rollouts`` asks for each release.
        """
        found = sorted((r for d in self.hub.deployments() if (r := as_release(self.spec.deployment, d)) is not None),
                       key=lambda r: r.version)
        if not with_rollouts:
            return found
        detailed = []
        for release in found:
            shown = self.hub.deployment(release.name)
            if shown is not None:
                detailed.append(as_release(self.spec.deployment, shown) or release)
        return detailed

    def candidates(self) -> list[int]:
        try:
            return [m.version for m in Model.list(self.workspace, self.spec.model, dict(self.spec.tags) or None)]
        except ModelNotFoundError:
            return []

    # --- one pass ------------------------------------------------------------------------------
    def run_once(self, version: int | None = None) -> PassResult:
        """Release ``version`` (None: the latest matching the tags) unless it was released; then prune."""
        state = ReleaseState.load(self.workspace, self.spec.deployment, self.spec.model)
        releases = self.releases()
        for found in releases:  # deployed, then killed before the state file said so
            entry = state.get(found.version)
            if entry is not None and entry.step != "deployed":
                state.put(found.version, entry.at("deployed", release=found.name, priority=found.priority))
        released = {r.version for r in releases} | state.deployed()
        choice = choose_version(self.spec.model, self.candidates(), released, version)
        if choice.version is None:
            self._prune()
            return PassResult(None, reason=choice.reason)
        shown = self.release(choice.version, state, releases)
        self._prune()
        return PassResult(choice.version, shown)

    def release(self, version: int, state: ReleaseState, releases: list[ReleaseInfo]) -> HubDeployment:
        """Take ``version`` through package, upload and deploy, resuming after the last step the state recorded."""
        spec = self.spec
        name = release_name(spec.deployment, version)
        model = Model.get(self.workspace, spec.model, version)
        earlier = [r for r in releases if r.version != version]
        condition = spec.target_condition or _previous_condition(earlier)
        if condition is None:
            raise InputError(f"The first release of {spec.deployment} needs a target condition: add "
                             "-c \"tags.site = 'lab'\" (later releases reuse the previous one's).")
        priority = next_priority(spec.priority, earlier)
        entry = state.get(version)
        module = self._module_of(entry, model)
        if module is None:
            entry = VersionEntry("packaging", started=time.time(), updated=time.time())
            state.put(version, entry)
            module, warnings = package(self.workspace, [ModelRef(model.name, model.version)], spec.package,
                                       self.console)
            self.log(f"packaged {model.id} as module {module.ref} (signed; manifest {module.digest[:19]}…)")
            for warning in warnings:
                self.log(f"warning: {warning}")
            fault_point("release.after-package")
        else:
            self.log(f"module {module.ref} of {model.id} packaged before; not packaging it again")
        assert entry is not None
        entry = entry.at("packaged", module=module.ref)
        state.put(version, entry)
        upload(self.hub, self.workspace, module)
        entry = entry.at("uploaded")
        state.put(version, entry)
        self.log(f"uploaded module {module.ref} to the hub at {self.hub.where} (signature verified there)")
        fault_point("release.after-upload")
        created = deploy(self.hub, name, condition, [(module.name, module.version)], priority, spec.rollout)
        fault_point("release.after-deploy")
        state.put(version, entry.at("deployed", release=name, priority=priority))
        self.log(f"created deployment {name}: {module.ref} to {condition!r} at priority {priority}, "
                 f"{describe(created)}")
        return created

    def _module_of(self, entry: VersionEntry | None, model: Model) -> StoredModule | None:
        """The module this version was packaged as by an earlier, interrupted pass, if it is still stored."""
        if entry is None:
            return None
        store = ModuleStore(self.workspace)
        if entry.module is not None:
            name, _, number = entry.module.rpartition(":")
            try:
                return store.get(name, int(number))
            except (UnknownModuleError, ValueError):
                return None  # deleted since: package again
        return packaged_since(self.workspace, self.spec.package.module_name or model.name,
                              [(model.name, model.version, model.digest)], entry.started)

    def _prune(self) -> None:
        if self.spec.keep is None:
            return
        for old in prune(self.releases(with_rollouts=True), self.spec.keep):
            self.hub.delete_deployment(old.name)
            self.log(f"deleted deployment {old.name} ({old.rollout or 'no rollout'}): "
                     f"--keep {self.spec.keep} completed releases")

    # --- the loop ------------------------------------------------------------------------------
    def watch(self, interval: float, stop: threading.Event, *, once: bool = False) -> None:
        """A pass every ``interval`` seconds until ``stop`` is set; a failed pass is logged and retried.

        A hub that cannot be reached or answers 5xx is retried at the next pass (logged
        once until it answers again); a refused token (401, 403) ends the watch; any other
        error of a version is logged once and that version is not tried again by this
        watch (a newer version, or a restart, tries again). Rollout state changes of the
        newest release are logged as they happen.
        """
        failed: dict[int, str] = {}
        seen: dict[str, str] = {}
        waiting = ""
        unreachable = ""
        while True:
            try:
                outcome = self._watch_pass(failed)
                if outcome.deployment is not None:  # its creation line said its state
                    seen[outcome.deployment.name] = _progress(outcome.deployment)
                if outcome.reason and outcome.reason != waiting:
                    self.log(f"waiting: {outcome.reason}")
                waiting = outcome.reason
                self._log_rollout(seen)
                unreachable = ""
            except EdgeshipError as exc:
                if not _retryable(exc):
                    raise
                if str(exc) != unreachable:
                    self.log(f"the hub did not answer, retrying every {interval:g} s: {exc}")
                unreachable = str(exc)
            if once or stop.wait(interval):
                return

    def _watch_pass(self, failed: dict[int, str]) -> PassResult:
        newest = max(self.candidates(), default=None)
        gave_up = f"{self.spec.model}:{newest} failed; a newer version is released when it is registered"
        if newest is not None and newest in failed:
            return PassResult(None, reason=gave_up)
        try:
            return self.run_once()
        except EdgeshipError as exc:
            if newest is None or _retryable(exc) or _status(exc) in (401, 403):
                raise
            failed[newest] = str(exc)
            self.log(f"release of {self.spec.model}:{newest} failed: {exc}")
            return PassResult(None, reason=gave_up)

    def _log_rollout(self, seen: dict[str, str]) -> None:
        """One line when the newest release's rollout changes state or wave (and its state when first seen)."""
        releases = self.releases()
        if not releases:
            return
        shown = self.hub.deployment(releases[-1].name)
        if shown is None or shown.rollout is None:
            return
        progress = _progress(shown)
        if seen.get(shown.name) != progress:
            self.log(f"deployment {shown.name}: {describe(shown)}")
            seen[shown.name] = progress


def _progress(found: HubDeployment) -> str:
    return f"{found.rollout}/{found.detail.get('wave')}"


def _status(exc: EdgeshipError) -> int:
    """The HTTP status of a hub's refusal (``HubRequestError.status``), 0 for other errors."""
    return int(getattr(exc, "status", 0) or 0)


def _retryable(exc: EdgeshipError) -> bool:
    """Worth another pass: the hub was not reached, or failed on its side (5xx)."""
    return isinstance(exc, TransportError) or _status(exc) >= 500


def _previous_condition(earlier: list[ReleaseInfo]) -> str | None:
    return max(earlier, key=lambda r: r.version).target_condition if earlier else None


def describe(found: HubDeployment) -> str:
    """``rollout rolling-out, wave 1 of 3`` or ``every targeted device at once (N)``, for log lines."""
    detail = found.detail
    if found.rollout is None:
        targeted = detail.get("targeted")
        return "every targeted device at once" + (f" ({targeted} device(s))" if targeted is not None else "")
    text = f"rollout {found.rollout}, wave {detail.get('wave')} of {detail.get('waves')}"
    reason = detail.get("reason")
    return text + (f" ({reason})" if reason and found.rollout in ("aborted", "waiting-approval") else "")
