"""``edgeship device ...`` and ``edgeship deployment ...``: operator commands, clients of the hub's REST API.

Every command takes ``--hub URL`` (``EDGESHIP_HUB_URL``), ``--token``
(``EDGESHIP_HUB_TOKEN``) and ``--json``. Tags are ``--tag key=value``: a value that
reads as a JSON number, ``true``, ``false`` or ``null`` is stored as that type
(target conditions compare types: ``tags.floor = 3`` does not match ``'3'``);
anything else is a string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeship.cli._common import console, err_console, parse_pairs, print_json
from edgeship.cli.hub import HubTokenOpt, HubUrlOpt, hub_client, parse_module_ref
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
from edgeship.errors import EdgeshipError, InputError
from edgeship.fsutil import atomic_write_text
from edgeship.mqtt.identity import validate_new_device_id

__all__ = ["JsonOpt", "deployment_app", "device_app", "parse_tags", "register"]

device_app = typer.Typer(help="Devices on the hub: create, tag, inspect, call direct methods.", no_args_is_help=True)
deployment_app = typer.Typer(help="Deployments on the hub: modules targeted at devices by tags.",
                             no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", "-t", help="key=value (repeatable).", show_default=False)]


class DeviceMethodError(EdgeshipError):
    """A device answered a direct method with an error status."""


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")
    app.add_typer(deployment_app, name="deployment")


def parse_tags(items: list[str] | None) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    for key, value in parse_pairs("--tag", items).items():
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        tags[key] = parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value
    return tags


def _status_code(device: dict[str, Any]) -> str:
    reported = device.get("reported") or {}
    code = (reported.get("status") or {}).get("code") if isinstance(reported, dict) else None
    return "-" if code is None else str(code)


def _online(device: dict[str, Any]) -> str:
    return {True: "yes", False: "no"}.get(device.get("online"), "-")  # type: ignore[arg-type]


# devices -----------------------------------------------------------------------------------------
CredentialsOutOpt = Annotated[Path | None, typer.Option(
    "--credentials-out", help="Write the broker password (or the client key) to this file, 0600, instead of "
    "printing it; a certificate and the hub CA go beside it as FILE.crt and FILE.ca.pem.", show_default=False)]


def _hand_over(answer: dict[str, Any], out: Path | None, as_json: bool) -> None:
    """Show the one-time credentials, or write them 0600 to ``out`` (then they are left out of the output)."""
    creds = answer["credentials"]
    if out is not None:
        if creds["kind"] == "password":
            atomic_write_text(out, creds["password"] + "\n", mode=0o600)
            creds["password"] = f"(written to {out})"
        else:  # the key alone in the 0600 file, so the certificate files can be shared (device flash)
            cert_file, ca_file = out.with_name(out.name + ".crt"), out.with_name(out.name + ".ca.pem")
            atomic_write_text(out, creds["privateKey"], mode=0o600)
            atomic_write_text(cert_file, creds["certificate"])
            atomic_write_text(ca_file, creds["caCertificate"])
            creds["privateKey"] = f"(written to {out})"
            creds["certificate"] = f"(written to {cert_file}, CA in {ca_file})"
    if as_json:
        print_json(answer)
    elif out is not None:
        console.print(f"Broker username {creds['username']}; {creds['kind']} written to {out} (0600).", highlight=False)
    elif creds["kind"] == "password":
        console.print(f"Broker username {creds['username']}, password {creds['password']}", highlight=False)
        console.print("The hub keeps only a hash: store the password now, it is not shown again.", highlight=False)
    else:
        typer.echo(creds["privateKey"] + creds["certificate"], nl=False)
        err_console.print("The hub does not keep the private key: store it now, it is not shown again.")
    broker = str(answer.get("broker", ""))
    if broker.startswith("failed"):
        err_console.print(f"Warning: the broker was not reloaded ({broker.removeprefix('failed: ')})", highlight=False)


@device_app.command("create")
def device_create(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    tag: TagOpt = None,
    certificate: Annotated[bool, typer.Option("--certificate", help="Log in to the broker with a client "
                                              "certificate from the hub CA instead of a password.")] = False,
    credentials_out: CredentialsOutOpt = None,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create a device and its broker credentials (shown once); it gets its first signed document at once."""
    validate_new_device_id(device_id)  # the hub refuses it too (400); say so before asking it
    tags = parse_tags(tag)
    with hub_client(hub, token) as client:
        device = client.create_device(device_id, tags, "certificate" if certificate else "password")
    if not as_json:
        console.print(f"Created device {device['id']} (desired sequence {device['desiredSequence']})",
                      highlight=False)
    _hand_over(device, credentials_out, as_json)


@device_app.command("rotate-credentials")
def device_rotate_credentials(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    credentials_out: CredentialsOutOpt = None,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """A new broker password (or certificate) for the device, shown once; the old one stops working."""
    with hub_client(hub, token) as client:
        answer = client.rotate_credentials(device_id)
    _hand_over(answer, credentials_out, as_json)


@device_app.command("delete")
def device_delete(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Delete a device: its broker login is revoked, its documents, reports and telemetry removed."""
    if not yes and not typer.confirm(f"Delete device {device_id} and revoke its broker credentials?"):
        raise InputError(f"Device {device_id!r} was not deleted; pass --yes to skip the question.")
    with hub_client(hub, token) as client:
        answer = client.delete_device(device_id)
    if as_json:
        print_json(answer)
    else:
        console.print(f"Deleted device {device_id}; its broker credentials are revoked.", highlight=False)
    broker = str(answer.get("broker", ""))
    if broker.startswith("failed"):
        err_console.print(f"Warning: the broker was not reloaded ({broker.removeprefix('failed: ')})", highlight=False)


@device_app.command("list")
def device_list(hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False) -> None:
    """Devices with their tags, desired sequence, reported status code and online flag."""
    with hub_client(hub, token) as client:
        devices = client.list_devices()
    if as_json:
        print_json(devices)
        return
    table = Table("id", "tags", "desired seq", "reported", "online")
    for d in devices:
        table.add_row(d["id"], json.dumps(d["tags"], sort_keys=True), str(d.get("desiredSequence") or "-"),
                      _status_code(d), _online(d))
    console.print(table)
    if not devices:
        console.print("No devices yet; add one with 'edgeship device create ID --tag key=value'.")


@device_app.command("show")
def device_show(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """One device: tags, desired and reported state, presence."""
    with hub_client(hub, token) as client:
        device = client.get_device(device_id)
    if as_json:
        print_json(device)
        return
    console.print(f"[bold]{device['id']}[/]", highlight=False)
    for label, value in (
        ("tags", json.dumps(device["tags"], sort_keys=True)),
        ("desired sequence", device.get("desiredSequence")),
        ("desired expires", device.get("desiredExpires")),
        ("online", _online(device)),
        ("last seen", device.get("lastSeen")),
        ("reported status", _status_code(device)),
    ):
        console.print(f"  {label:17} {'-' if value is None else value}", highlight=False)
    modules = ((device.get("reported") or {}).get("modules") or {})
    if modules:
        table = Table("module", "version", "desired", "status", "restarts", "last error")
        for name, m in sorted(modules.items()):
            table.add_row(name, str(m.get("version")), str(m.get("desiredVersion")), str(m.get("status")),
                          str(m.get("restartCount", 0)), str(m.get("lastError") or ""))
        console.print(table)


@device_app.command("tag")
def device_tag(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    tag: TagOpt = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Tag name to remove (repeatable).",
                                                     show_default=False)] = None,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Set and remove tags; the device joins and leaves deployments before this returns."""
    updates = parse_tags(tag)
    if not updates and not remove:
        raise InputError("Nothing to change: give --tag key=value and/or --remove key.")
    with hub_client(hub, token) as client:
        tags = dict(client.get_device(device_id)["tags"])
        for key in remove or []:
            if key not in tags:
                raise InputError(f"Device {device_id!r} has no tag {key!r} to remove.")
            del tags[key]
        tags.update(updates)
        device = client.set_tags(device_id, tags)
    if as_json:
        print_json(device)
        return
    console.print(f"Tags of {device['id']}: {json.dumps(device['tags'], sort_keys=True)} "
                  f"(desired sequence {device['desiredSequence']})", highlight=False)


def _call(hub: str | None, token: str | None, device_id: str, method: str, args: dict[str, Any],
          timeout: float) -> Any:
    with hub_client(hub, token) as client:
        answer = client.invoke(device_id, method, args, timeout)
    if answer.get("status", 500) >= 400:
        raise DeviceMethodError(
            f"Device {device_id!r} refused {method!r} ({answer.get('status')}): {answer.get('error') or 'no reason'}"
        )
    return answer


TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the device.")]


@device_app.command("logs")
def device_logs(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    module: Annotated[str, typer.Argument(metavar="MODULE")],
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end.", min=1, max=10000)] = 100,
    timeout: TimeoutOpt = 10.0,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """A module's recent log lines, fetched from the device by a direct method."""
    answer = _call(hub, token, device_id, "logs", {"module": module, "tail": tail}, timeout)
    if as_json:
        print_json(answer)
        return
    typer.echo(str((answer.get("result") or {}).get("logs", "")), nl=False)


@device_app.command("restart")
def device_restart(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    module: Annotated[str, typer.Argument(metavar="MODULE")],
    timeout: TimeoutOpt = 30.0,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Restart a module on the device (a direct method)."""
    answer = _call(hub, token, device_id, "restart", {"module": module}, timeout)
    if as_json:
        print_json(answer)
        return
    console.print(f"Restarted {module} on {device_id}", highlight=False)


@device_app.command("telemetry")
def device_telemetry(
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    limit: Annotated[int, typer.Option("--limit", help="Newest batches to show.", min=1, max=1000)] = 10,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """The device's newest telemetry samples (per module: requests, errors, latency)."""
    with hub_client(hub, token) as client:
        batches = client.telemetry(device_id, limit)
    if as_json:
        print_json(batches)
        return
    table = Table("time", "seq", "cpu %", "memory MB", "module", "requests", "errors", "p50 ms", "p99 ms")
    for batch in batches:
        for sample in batch["batch"].get("samples", []):
            modules = sample.get("modules") or {"-": None}
            for name, m in sorted(modules.items()):
                latency = (m or {}).get("latencyMs") or {}
                table.add_row(str(sample["time"]), str(sample["seq"]), f"{sample['cpuPercent']:.1f}",
                              f"{sample['memoryBytes'] / 1e6:.1f}", name, str((m or {}).get("requests", "-")),
                              str((m or {}).get("errors", "-")), str(latency.get("p50", "-")),
                              str(latency.get("p99", "-")))
    console.print(table)
    if not batches:
        console.print(f"No telemetry from {device_id} yet.")


# deployments -------------------------------------------------------------------------------------
@deployment_app.command("create")
def deployment_create(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    module: Annotated[list[str], typer.Option("--module", "-m", help="NAME:VERSION (repeatable).")],
    target_condition: Annotated[str, typer.Option("--target-condition", "-c",
                                                  help="e.g. \"tags.site = 'lab'\" or '*'.")],
    priority: Annotated[int, typer.Option("--priority", "-p", help="Highest wins per module name.")] = 0,
    waves: WavesOpt = None, exponential: ExponentialOpt = None, spread_by: SpreadByOpt = None, soak: SoakOpt = None,
    advance_percent: AdvancePercentOpt = None, approve_each_wave: ApproveEachWaveOpt = None,
    wave_timeout: WaveTimeoutOpt = None, abort_percent: AbortPercentOpt = None, abort_min: AbortMinOpt = None,
    abort_on: AbortOnOpt = None, gate: GateOpt = None, rollout_file: RolloutFileOpt = None,
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create a deployment. Without rollout options every targeted device gets a new signed document before this
    returns; with --waves or --exponential it goes out wave by wave ('deployment show NAME --watch')."""
    refs = [parse_module_ref(m, need_version=True) for m in module]
    modules = [{"name": n, "version": v} for n, v in refs]
    rollout = RolloutOptions(rollout_file, waves, exponential, spread_by, soak, advance_percent, approve_each_wave,
                             wave_timeout, abort_percent, abort_min, abort_on, gate).policy()
    with hub_client(hub, token) as client:
        created = client.create_deployment(name, target_condition, modules, priority, rollout)
    if as_json:
        print_json(created)
        return
    counts = (created.get("status") or {}).get("counts") or {}
    staged = created.get("rollout")
    console.print(f"Created deployment {created['name']}: {counts.get('targeted', 0)} device(s) targeted"
                  + (f"; rollout {staged['state']}, wave {staged['wave']} of {len(staged['waves'])}" if staged else ""),
                  highlight=False)


@deployment_app.command("list")
def deployment_list(hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False) -> None:
    """Deployments with their priority, condition and modules."""
    with hub_client(hub, token) as client:
        deployments = client.list_deployments()
    if as_json:
        print_json(deployments)
        return
    table = Table("name", "priority", "target condition", "modules")
    for d in deployments:
        table.add_row(d["name"], str(d["priority"]), d["targetCondition"],
                      ", ".join(f"{m['name']}:{m['version']}" for m in d["modules"]))
    console.print(table)
    if not deployments:
        console.print("No deployments yet; create one with 'edgeship deployment create'.")


@deployment_app.command("delete")
def deployment_delete(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    hub: HubUrlOpt = None, token: HubTokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Delete a deployment; its devices are re-targeted before this returns."""
    with hub_client(hub, token) as client:
        client.delete_deployment(name)
    if as_json:
        print_json({"deleted": name})
        return
    console.print(f"Deleted deployment {name}", highlight=False)
