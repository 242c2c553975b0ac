"""``edgeship model ...``: register, list, show, download, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, parse_pairs, print_json, workspace_from
from edgeship.registry import Model, parse_model_ref
from edgeship.registry.frameworks import FRAMEWORKS
from edgeship.registry.refs import NAME_RULE

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
