"""``edgeship deployment show|events|pause|resume|approve|abort``: a deployment and its staged rollout.

Clients of the hub's REST API, registered on the ``deployment`` app of
:mod:`edgeship.cli.fleet`. What they print is rendered from the hub's JSON
(``RolloutView.to_dict()``, ``RolloutEvent.to_dict()``), which ``--json`` prints as it
is, so the table and the JSON never disagree. ``show --watch`` redraws with
``rich.live.Live`` until the rollout is completed or aborted; Ctrl-C leaves quietly.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgeship.cli._common import console, print_json
from edgeship.cli.fleet import JsonOpt, deployment_app
from edgeship.cli.hub import HubTokenOpt, HubUrlOpt, hub_client
from edgeship.errors import InputError

__all__ = ["FINAL_STATES", "render_deployment"]

FINAL_STATES = frozenset({"completed", "aborted"})  # a rollout in these changes no more: --watch stops
NameArg = Annotated[str, typer.Argument(metavar="NAME")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; stored with the rollout's event.",
                                               show_default=False)]


@deployment_app.command("show")
def deployment_show(
    name: NameArg,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw live until the rollout is completed or aborted "
                                        "(Ctrl-C to leave).")] = False,
    interval: Annotated[float, typer.Option("--interval", metavar="S", min=0.2, max=3600,
                                            help="Seconds between redraws with --watch.")] = 2.0,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """IoT Edge's counts (Targeted, Applied, Reporting Success, Reporting Failure), each device's state and,
    for a deployment in waves, its rollout: state, waves by outcome, what it waits for, tripped and rolled-back
    devices."""
    if watch and as_json:
        raise InputError("--watch redraws a table; leave out --json (or poll 'deployment show NAME --json').")
    with hub_client(hub, token) as client:
        shown = client.get_deployment(name)
        if as_json:
            print_json(shown)
            return
        if not watch or not shown.get("rollout"):
            console.print(render_deployment(shown, devices=True))
            if watch:
                console.print(f"Deployment {name} has no rollout to watch: it went to every targeted device at once.",
                              highlight=False)
            return
        try:
            with Live(render_deployment(shown, devices=False), console=console, auto_refresh=False) as live:
                while shown["rollout"]["state"] not in FINAL_STATES:
                    time.sleep(interval)
                    shown = client.get_deployment(name)
                    live.update(render_deployment(shown, devices=False), refresh=True)
        except KeyboardInterrupt:
            return


@deployment_app.command("events")
def deployment_events(name: NameArg, hub: HubUrlOpt = None, token: HubTokenOpt = None,
                      as_json: JsonOpt = False) -> None:
    """Every state change of the deployment's rollout, oldest first: time, actor (token name, or hub), action,
    state after it, reason."""
    with hub_client(hub, token) as client:
        events = client.rollout_events(name)
    if as_json:
        print_json(events)
        return
    table = Table("time", "actor", "action", "state", "reason")
    for e in events:
        table.add_row(_time(e["at"]), e["actor"], e["action"], e["state"], e.get("reason") or "")
    console.print(table)


def _act(action: str, done: str, name: str, reason: str | None, hub: str | None, token: str | None,
         as_json: bool) -> None:
    with hub_client(hub, token) as client:
        rollout = client.rollout_action(name, action, reason)
    if as_json:
        print_json(rollout)
        return
    console.print(f"{done} the rollout of {name}: {_position(rollout)}", highlight=False)
    if rollout.get("waitingFor"):
        console.print(f"  waiting for {rollout['waitingFor']}", highlight=False)


@deployment_app.command("pause")
def deployment_pause(name: NameArg, reason: ReasonOpt = None, hub: HubUrlOpt = None, token: HubTokenOpt = None,
                     as_json: JsonOpt = False) -> None:
    """Pause the rollout: no next wave starts until 'deployment resume NAME'; devices keep what they have."""
    _act("pause", "Paused", name, reason, hub, token, as_json)


@deployment_app.command("resume")
def deployment_resume(name: NameArg, reason: ReasonOpt = None, hub: HubUrlOpt = None, token: HubTokenOpt = None,
                      as_json: JsonOpt = False) -> None:
    """Resume a paused rollout where it stopped."""
    _act("resume", "Resumed", name, reason, hub, token, as_json)


@deployment_app.command("approve")
def deployment_approve(name: NameArg, reason: ReasonOpt = None, hub: HubUrlOpt = None, token: HubTokenOpt = None,
                       as_json: JsonOpt = False) -> None:
    """Approve a rollout waiting for approval (--approve-each-wave, or a wave that timed out): the next wave
    starts."""
    _act("approve", "Approved", name, reason, hub, token, as_json)


@deployment_app.command("abort")
def deployment_abort(name: NameArg, reason: ReasonOpt = None, hub: HubUrlOpt = None, token: HubTokenOpt = None,
                     as_json: JsonOpt = False) -> None:
    """Abort the rollout: every device it reached is re-issued what it had without it (its last known-good
    modules where needed)."""
    _act("abort", "Aborted", name, reason, hub, token, as_json)


# rendering ---------------------------------------------------------------------------------------
def _time(iso: str) -> str:
    """``2026-12-05 10:22:59 UTC`` from the hub's ISO 8601 time (the JSON keeps it whole)."""
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if at.tzinfo else iso


def _position(rollout: dict[str, Any]) -> str:
    return f"{rollout['state']}, wave {rollout['wave']} of {len(rollout['waves'])}"


def render_deployment(shown: dict[str, Any], *, devices: bool) -> RenderableType:
    """The deployment as ``show`` prints it; ``devices`` False leaves out the per-device table (``--watch``)."""
    counts = (shown.get("status") or {}).get("counts") or {}
    parts: list[RenderableType] = [
        Text.from_markup(f"[bold]{shown['name']}[/] priority {shown['priority']}  ") + Text(shown["targetCondition"]),
        Text("  modules: " + ", ".join(f"{m['name']}:{m['version']}" for m in shown["modules"])),
        Text(f"  Targeted {counts.get('targeted', 0)}  Applied {counts.get('applied', 0)}  "
             f"Reporting Success {counts.get('reportingSuccess', 0)}  "
             f"Reporting Failure {counts.get('reportingFailure', 0)}"),
    ]
    if shown.get("rollout"):
        parts.extend(_render_rollout(shown["rollout"]))
    if devices:
        table = Table("device", "state", "desired seq", "reported seq", "code", "reason")
        for d in (shown.get("status") or {}).get("devices") or []:
            table.add_row(d["deviceId"], d["state"], str(d.get("desiredSequence") or "-"),
                          str(d.get("reportedSequence") or "-"), str(d.get("code") or "-"), str(d.get("reason") or ""))
        parts.append(table)
    return Group(*parts)


def _render_rollout(rollout: dict[str, Any]) -> list[RenderableType]:
    parts: list[RenderableType] = [Text(f"  rollout: {_position(rollout)}  (started {_time(rollout['started'])}, "
                                        f"updated {_time(rollout['updated'])})")]
    if rollout.get("waitingFor"):
        parts.append(Text(f"  waiting for: {rollout['waitingFor']}"))
    if rollout.get("reason"):
        parts.append(Text(f"  reason: {rollout['reason']}"))
    gated = bool((rollout.get("policy") or {}).get("gates")) or any(
        w.get("unhealthy") or w.get("noData") for w in rollout["waves"])
    keys = ["targeted", "applied", "succeeded", "soaking", "pending", "failed", "refused", "timedOut"]
    headers = ["targeted", "applied", "succeeded", "soaking", "pending", "failed", "refused", "timed-out"]
    if gated:  # the health gates' outcomes, only where a policy has gates (keeps the table narrow otherwise)
        keys += ["unhealthy", "noData"]
        headers += ["unhealthy", "no data"]
    waves = Table("wave", "status", *headers)
    for w in rollout["waves"]:
        waves.add_row(str(w["wave"]), w["status"], *(str(w.get(k, 0)) for k in keys))
    parts.append(waves)
    if rollout.get("tripped"):
        parts.append(Text("  tripped by: " + ", ".join(rollout["tripped"])))
    if rollout.get("rolledBack"):
        back = Table("rolled back to last known-good", "modules")
        for entry in rollout["rolledBack"]:
            back.add_row(entry["device"], ", ".join(entry["modules"]))
        parts.append(back)
    return parts
