"""``edgeship package``: registered models + Azure ML configs → a signed module directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli._common import WorkspaceOpt, console, err_console, workspace_from

__all__ = ["register"]


def package(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Registered model NAME:VERSION (repeatable).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Module directory to write; an existing module there is replaced.")
    ],
    ic: Annotated[
        Path | None, typer.Option("--ic", help="Azure ML inferenceconfig.json/.yml; omit for no-code serving.")
    ] = None,
    dc: Annotated[Path | None, typer.Option("--dc", help="Azure ML deploymentconfig.json/.yml.")] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="local, iotedge, aci, aks or fpga (default: the dc's computeType).")
    ] = None,
    base_image: Annotated[
        str, typer.Option("--base-image", help="Image to build FROM; needs python3 with venv.")
    ] = "python:3.11-slim",
    image: Annotated[
        bool | None,
        typer.Option("--image/--no-image", help="Build a container image (default: when a Docker engine answers)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Module name (default: the first model's).")] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="Release key name to sign with (default: all release keys).")
    ] = None,
    push: Annotated[str | None, typer.Option("--push", help="Also push the image to this registry.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing -o folder even if it is not a module.")
    ] = False,
    schema_version: Annotated[
        int,
        typer.Option("--schema-version", help="Manifest version: 2 adds content-addressed parts (agents from "
                     "issue 16 on read it); 1 for fleets of older agents.", min=1, max=2),
    ] = 2,
    resources_from_profile: Annotated[
        bool,
        typer.Option("--resources-from-profile", help="The dc's cpu and memoryInGB from 'edgeship model profile'."),
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Package models and an entry script into a signed module (bundle, image, target artifacts)."""
    from edgeship.packager.package import PackageRequest, package_module
    from edgeship.registry import parse_model_ref

    ws = workspace_from(workspace)
    request = PackageRequest(
        models=[parse_model_ref(m, require_version=True) for m in model],
        output=output,
        inference_config=ic,
        deployment_config=dc,
        target=target.lower() if target else None,
        base_image=base_image,
        image=image,
        name=name,
        signing_keys=tuple(key or ()),
        push=push,
        force=force,
        schema_version=schema_version,
        resources_from_profile=resources_from_profile,
    )
    result = package_module(ws, request, console=err_console)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    manifest = result.manifest
    console.print(
        f"Packaged module [bold]{manifest.ref}[/] ({manifest.target}) into {result.output}", highlight=False
    )
    console.print(f"  bundle {manifest.bundle.digest} ({manifest.bundle.size} bytes)", highlight=False)
    if manifest.image is not None:
        console.print(f"  image  {manifest.image.tag} {manifest.image.id}", highlight=False)
    if manifest.parts is not None:
        count, size = len(manifest.parts.all()), sum(p.size for p in manifest.parts.all())
        console.print(f"  parts  {count} content-addressed part(s), {size} bytes (schemaVersion 2)", highlight=False)
    console.print(f"  signed {len(manifest.files)} file(s); verify with 'edgeship module verify {result.output}'",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("package")(package)
