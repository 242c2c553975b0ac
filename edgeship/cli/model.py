"""``edgeship model ...``: register, list, show, download, delete, and deploy (as ``az ml model deploy``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, parse_pairs, print_json, workspace_from
from edgeship.cli.hub import HubTokenOpt, HubUrlOpt, hub_client
from edgeship.errors import InputError
from edgeship.registry import Model, parse_model_ref
from edgeship.registry.frameworks import FRAMEWORKS
from edgeship.registry.refs import NAME_RULE
from edgeship.workspace import Workspace

if TYPE_CHECKING:
    from edgeship.modules.store import StoredModule

__all__ = ["app"]

app = typer.Typer(help="Register and manage model versions.", no_args_is_help=True)


@app.command("register")
def register(
    name: Annotated[str, typer.Option("--name", "-n", help=f"Model name ({NAME_RULE}).")],
    path: Annotated[Path, typer.Option("--path", "-p", help="Model file or folder.")],
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag key=value (repeatable).")] = None,
    prop: Annotated[
        list[str] | None, typer.Option("--property", help="Property key=value (repeatable).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="Free text.")] = None,
    framework: Annotated[
        str | None, typer.Option("--framework", help=f"One of {', '.join(FRAMEWORKS)}; detected if omitted.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Register a file or folder as the next version of NAME."""
    ws = workspace_from(workspace)
    model = Model.register(
        ws,
        path,
        name,
        tags=parse_pairs("tag", tag),
        properties=parse_pairs("property", prop),
        description=description,
        model_framework=framework,
    )
    if as_json:
        print_json(model.serialize())
        return
    console.print(
        f"Registered [bold]{model.name}[/] version [bold]{model.version}[/] "
        f"({model.model_framework}, {model.digest})",
        highlight=False,
    )


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option("--name", "-n", help="Only this model name.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only models with tag key=value.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Only the newest version of each name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """List registered model versions."""
    ws = workspace_from(workspace)
    if name is not None:
        parse_model_ref(name)
    models = Model.list(ws, name=name, tags=parse_pairs("tag", tag), latest=latest)
    if as_json:
        print_json([m.serialize() for m in models])
        return
    table = Table("name", "version", "framework", "size", "tags", "digest")
    for m in models:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items()))
        table.add_row(m.name, str(m.version), m.model_framework, _size(m.record.size), tags, m.digest[:19])
    console.print(table)
    if not models:
        console.print("No models match; register one with 'edgeship model register -n NAME -p PATH'.")


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (newest when no version).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Show one model version as JSON: files, digests, tags and properties."""
    ws = workspace_from(workspace)
    parsed = parse_model_ref(ref)
    print_json(Model.get(ws, parsed.name, parsed.version).serialize())


@app.command("download")
def download(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the model into.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing copy.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a model's file or folder into a folder, verifying every byte."""
    ws = workspace_from(workspace)
    parsed = parse_model_ref(ref)
    model = Model.get(ws, parsed.name, parsed.version)
    written = model.download(output, exist_ok=overwrite)
    console.print(f"Downloaded {model.id} to {written}", highlight=False)


@app.command("delete")
def delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to delete.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Delete one model version (its blobs too, when nothing else uses them)."""
    ws = workspace_from(workspace)
    parsed = parse_model_ref(ref, require_version=True)
    model = Model.get(ws, parsed.name, parsed.version)
    model.delete()
    console.print(f"Deleted {model.id}", highlight=False)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command("deploy")
def deploy(
    name: Annotated[str, typer.Option("--name", "-n", help="Service name (lowercase letters, digits, - _ .).")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Registered model NAME:VERSION (repeatable).")],
    ic: Annotated[Path | None, typer.Option(
        "--ic", "--inference-config-file", help="Azure ML inferenceconfig.json/.yml (omit for no-code serving).",
        show_default=False)] = None,
    dc: Annotated[Path | None, typer.Option(
        "--dc", "--deploy-config-file", help="Azure ML deploymentconfig.json/.yml; its computeType picks the "
        "target (default: local).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a service of that name.")] = False,
    port: Annotated[int | None, typer.Option("--port", "-p", help="Local: host port (default: the dc's port, "
                                             "else a free one).", show_default=False)] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="Local: docker, process or auto.")] = "process",
    image: Annotated[bool | None, typer.Option(
        "--image/--no-image", help="ACI/AKS/IoT Edge: build a container image (default: when a Docker engine "
        "answers).", show_default=False)] = None,
    device_group: Annotated[str | None, typer.Option(
        "--device-group", help="IoT Edge: also upload the module to the hub and deploy it to the devices this "
        "target condition picks (e.g. \"tags.site = 'lab'\"), as deployment NAME.", show_default=False)] = None,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Package, sign and deploy models as 'az ml model deploy' did: local runs here, ACI/AKS/IoT Edge are written."""
    from edgeship.cli.deploy import package_models, print_service, services
    from edgeship.local_services import DeployRequest, script_env
    from edgeship.packager.config import load_deployment_config

    ws = workspace_from(workspace)
    local = services(ws)
    local.record_path(name)  # every check before the packaging, which takes a while
    for ref in model:
        parse_model_ref(ref, require_version=True)
    if local.exists(name) and not overwrite:
        raise InputError(f"Service {name} exists; pass --overwrite to replace it, or choose another -n.")
    deployment = load_deployment_config(dc) if dc is not None else None
    target = deployment.compute_type if deployment else "local"
    if target == "fpga":
        raise InputError("computeType fpga is packaged with 'edgeship package --target fpga'; it has no service.")
    if device_group is not None and target != "iotedge":
        raise InputError(f"--device-group goes with computeType IOT (IoT Edge); this deploymentconfig is {target}.")
    stored = package_models(ws, model, ic, dc, target=target, image=image)
    if target in ("aci", "aks"):
        print_service(local.record_cloud(name, stored, target))
        return
    if target == "iotedge":
        if device_group is not None:
            _to_device_group(ws, stored, name, device_group, hub, token)
            return
        console.print(f"Module {stored.ref} is signed with its IoT Edge deployment in {stored.directory / 'targets'}; "
                      f"ship it to a device group with 'edgeship hub module upload {stored.ref}' and "
                      f"'edgeship deployment create {name} -m {stored.ref} -c \"tags.group = ...\"', or deploy "
                      "again with --device-group.", highlight=False)
        return
    record = local.deploy(DeployRequest(name=name, module=stored, runtime=runtime,
                                        port=port or (deployment.port if deployment else None),
                                        env=script_env(deployment.scoring_timeout_ms if deployment else None)))
    print_service(record)


def _to_device_group(ws: Workspace, stored: StoredModule, name: str, condition: str, hub: str | None,
                     token: str | None) -> None:
    """Upload the signed module and create deployment ``name`` for ``condition``: the release's own two steps."""
    from edgeship.release import RestHub
    from edgeship.release.steps import deploy as deploy_step
    from edgeship.release.steps import upload

    with hub_client(hub, token) as client:
        release_hub = RestHub(client)
        upload(release_hub, ws, stored)
        created = deploy_step(release_hub, name, condition, [(stored.name, stored.version)], 0, None)
    console.print(f"Deployment [bold]{created.name}[/] ships module {stored.ref} to the devices where {condition}; "
                  f"see 'edgeship deployment show {created.name}'.", highlight=False)
