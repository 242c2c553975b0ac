"""The planner: desired state + current state -> an ordered list of commands. Pure.

As IoT Edge's ``HealthRestartPlanner``: planning is a function of data only (the
clock is in :class:`CurrentState`), and commands are plain frozen records the
runner hands to an executor. Tests record the command sequence; no runtime runs.

Per module name, with services in two blue/green *slots* (``<name>.a`` and
``<name>.b``, lowercased):

- new, or a different build (manifest digest) -> check the disk has room for it,
  download the bundle (and image), verify, install into the free slot, start it, health-check it, switch to it,
  then stop and remove the old slot. Nothing touches the old service before the
  switch, so a failed candidate leaves it serving (the runner undoes the candidate).
- the same build, running -> nothing.
- the same build, exited -> restart as the restart policy allows, after an
  exponential cool-off from the last exit (``backoff`` until then).
- no longer desired -> stop and remove.
- services that are no module's active slot (left by a crash mid-update) are
  stopped and removed first, so a slot is always free and nothing half-installed
  lingers.
- an active slot the agent stopped to free a fixed port for its candidate, left
  stopped by a kill inside the switch (``CurrentState.yielded``), is restarted
  first, so the old version serves again while the update is retried.

"Model-only update": when the desired environment lock digest already has a
ready environment on the device, ``Install.reuse_env`` is True and the runtime
skips building one.

Order: orphans, then removals (they free resources), then each module by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from edgeship.deployment import RestartPolicy
from edgeship.records import field, record

__all__ = [
    "SLOTS",
    "UNPACK_FACTOR",
    "CheckSpace",
    "Command",
    "CurrentState",
    "DesiredModule",
    "DesiredState",
    "Download",
    "HealthCheck",
    "Install",
    "Remove",
    "Restart",
    "RestartLimits",
    "RunningService",
    "StartCandidate",
    "Stop",
    "Switch",
    "Verify",
    "plan",
    "restart_delay",
    "service_name",
]

SLOTS = ("a", "b")
UNPACK_FACTOR = 2  # an install may write this many times the bundle's size (unpacked app, venv)
ServiceState = Literal["running", "stopped", "failed", "backoff"]


def service_name(module: str, slot: str) -> str:
    """The runtime service of ``module`` in ``slot``: ``digits.a``."""
    return f"{module.lower()}.{slot}"


# --- input data -------------------------------------------------------------------------------


@record
class DesiredModule:
    """One module of an accepted deployment document, flattened for planning."""

    name: str
    version: int
    module_digest: str  # sha256 of the signed manifest bytes: the identity of a build
    lock_digest: str  # environment lock: equal digests share an environment
    bundle_url: str
    bundle_digest: str
    image_url: str | None = None
    image_digest: str | None = None
    port: int | None = None
    restart_policy: RestartPolicy = "on-failure"
    bundle_size: int = 0  # bytes, signed in the manifest: a download never writes more
    image_size: int = 0  # bytes of the image archive (signed), when there is one
    parts: bool = False  # schemaVersion 2: fetch the parts the device lacks instead of the bundle (ADR 0028)


@record
class DesiredState:
    sequence: int
    modules: Mapping[str, DesiredModule]


@record
class RunningService:
    """What the runtime reports about one service (whatever its state)."""

    service: str
    module: str
    version: int
    module_digest: str
    lock_digest: str
    state: ServiceState
    restart_count: int = 0
    exit_code: int | None = None
    last_exit_time: datetime | None = None
    port: int | None = None


@record
class CurrentState:
    """The device now: its services, which slot serves each module, ready environments, the time."""

    now: datetime
    services: Mapping[str, RunningService] = field(default_factory=dict)
    active: Mapping[str, str] = field(default_factory=dict)  # module name -> service name
    environments: frozenset[str] = frozenset()  # lock digests with a ready environment
    yielded: frozenset[str] = frozenset()  # active slots stopped to free a fixed port for a switch that never ended


@record
class RestartLimits:
    """Cool-off between restarts of a crashed module: ``base * 2**restart_count``, capped."""

    base: timedelta = timedelta(seconds=10)  # IoT Edge's cool-off unit
    cap: timedelta = timedelta(minutes=5)


def restart_delay(restart_count: int, limits: RestartLimits) -> timedelta:
    exponent = min(max(restart_count, 0), 20)  # bounded so the multiplication stays small
    return min(limits.base * (2**exponent), limits.cap)


# --- commands --------------------------------------------------------------------------------


@record
class Command:
    """A step of a plan. ``id`` is stable across plans, so the runner's cool-off follows it."""

    kind: ClassVar[str] = "command"
    module: str
    service: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.service}"

    def undo(self) -> tuple[Command, ...]:
        """Commands that revert this one when a later step of its module fails."""
        return ()


@record
class CheckSpace(Command):
    """Refuse the update before any download when the disk cannot hold it (a full disk kills devices).

    ``blobs`` are the ``(digest, signed size)`` of the artifacts to fetch (the executor
    counts what is cached or partly downloaded); ``unpack`` is what installing them may
    write besides (``UNPACK_FACTOR`` times the bundle: the unpacked app and a venv).
    """

    kind: ClassVar[str] = "check_space"
    blobs: tuple[tuple[str, int], ...]
    unpack: int


@record
class Download(Command):
    kind: ClassVar[str] = "download"
    artifact: Literal["bundle", "image", "parts"]  # parts: the executor picks the missing ones (ADR 0028)
    url: str
    digest: str
    size: int  # bytes, from the signed manifest

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.service}:{self.artifact}"


@record
class Verify(Command):
    """Check the module's release signature and every artifact digest before installing."""

    kind: ClassVar[str] = "verify"
    module_digest: str


@record
class Install(Command):
    kind: ClassVar[str] = "install"
    module_digest: str
    lock_digest: str
    reuse_env: bool

    def undo(self) -> tuple[Command, ...]:
        return (Remove(self.module, self.service),)


@record
class StartCandidate(Command):
    kind: ClassVar[str] = "start_candidate"

    def undo(self) -> tuple[Command, ...]:
        return (Stop(self.module, self.service),)


@record
class HealthCheck(Command):
    kind: ClassVar[str] = "health_check"


@record
class Switch(Command):
    """Make ``service`` the module's active slot (it answers on the module's port from now on)."""

    kind: ClassVar[str] = "switch"
    previous: str | None = None


@record
class Stop(Command):
    kind: ClassVar[str] = "stop"


@record
class Remove(Command):
    kind: ClassVar[str] = "remove"


@record
class Restart(Command):
    kind: ClassVar[str] = "restart"
    attempt: int = 1


# --- the planner -----------------------------------------------------------------------------


def plan(desired: DesiredState, current: CurrentState, limits: RestartLimits | None = None) -> list[Command]:
    """The commands that take the device from ``current`` to ``desired``; empty when converged."""
    limits = limits or RestartLimits()
    commands: list[Command] = []
    active_services = set(current.active.values())
    for name in sorted(current.services):
        if name not in active_services:
            orphan = current.services[name]
            commands += [Stop(orphan.module, name), Remove(orphan.module, name)]
    for module in sorted(current.active):
        if module not in desired.modules:
            service = current.active[module]
            commands += [Stop(module, service), Remove(module, service)]
    for module in sorted(desired.modules):
        commands += _plan_module(desired.modules[module], current, limits)
    return commands


def _plan_module(want: DesiredModule, current: CurrentState, limits: RestartLimits) -> list[Command]:
    active_name = current.active.get(want.name)
    active = current.services.get(active_name) if active_name else None
    resume: list[Command] = []
    if active is not None and active.service in current.yielded and active.state not in ("running", "backoff"):
        # The agent stopped this slot to free its fixed port and was killed before the switch
        # ended: it serves again first, whatever its restart policy, then the update is retried.
        resume = [Restart(want.name, active.service)]
    if active is not None and active.module_digest == want.module_digest:
        return resume or _plan_restart(want, active, current.now, limits)
    return resume + _plan_update(want, active, current.environments)


def _plan_update(want: DesiredModule, old: RunningService | None, environments: frozenset[str]) -> list[Command]:
    slot = SLOTS[0]
    if old is not None and old.service == service_name(want.name, SLOTS[0]):
        slot = SLOTS[1]
    candidate = service_name(want.name, slot)
    if want.parts:  # url: the bundle's location, the parts lie beside it; digest: the build's
        downloads = [Download(want.name, candidate, "parts", want.bundle_url, want.module_digest, want.bundle_size)]
    else:
        downloads = [Download(want.name, candidate, "bundle", want.bundle_url, want.bundle_digest, want.bundle_size)]
    if want.image_url is not None and want.image_digest is not None and not want.parts:
        downloads.append(Download(want.name, candidate, "image", want.image_url, want.image_digest, want.image_size))
    blobs = tuple((d.digest, d.size) for d in downloads)
    steps: list[Command] = [CheckSpace(want.name, candidate, blobs, UNPACK_FACTOR * want.bundle_size), *downloads]
    steps += [
        Verify(want.name, candidate, want.module_digest),
        Install(want.name, candidate, want.module_digest, want.lock_digest, want.lock_digest in environments),
        StartCandidate(want.name, candidate),
        HealthCheck(want.name, candidate),
        Switch(want.name, candidate, old.service if old else None),
    ]
    if old is not None:
        steps += [Stop(want.name, old.service), Remove(want.name, old.service)]
    return steps


def _plan_restart(
    want: DesiredModule, service: RunningService, now: datetime, limits: RestartLimits
) -> list[Command]:
    if service.state in ("running", "backoff"):
        return []
    crashed = service.exit_code not in (None, 0) or service.state == "failed"
    if want.restart_policy == "never" or (want.restart_policy == "on-failure" and not crashed):
        return []
    exited = service.last_exit_time
    if exited is not None and now < exited + restart_delay(service.restart_count, limits):
        return []
    return [Restart(want.name, service.service, service.restart_count + 1)]
