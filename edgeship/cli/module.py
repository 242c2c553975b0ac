"""``edgeship module ...``: list, show and verify signed modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, print_json, workspace_from
from edgeship.errors import InputError

__all__ = ["app"]

app = typer.Typer(help="List, show and verify signed modules.", no_args_is_help=True)


@app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="Module directory, or NAME:VERSION of a stored module.")],
    trust_root: Annotated[
        Path | None,
        typer.Option("--trust-root", help="Signed trust root (default: this workspace's release keys, threshold 1)."),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Check the signature, its threshold and every artifact digest of a module."""
    from edgeship.modules.verify import load_trust_root_file, local_trust_root, verify_module_dir

    directory = _module_dir(path, workspace)
    root = load_trust_root_file(trust_root) if trust_root else local_trust_root(workspace_from(workspace))
    verified = verify_module_dir(directory, root)
    m = verified.manifest
    console.print(
        f"[green]OK[/] module {m.ref}: signature meets the release threshold, {len(m.files)} artifacts match",
        highlight=False,
    )


@app.command("list")
def list_modules(
    name: Annotated[str | None, typer.Option("--name", "-n", help="Only this module name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """List the modules stored in the workspace."""
    from edgeship.modules.store import ModuleStore

    stored = ModuleStore(workspace_from(workspace)).list(name)
    if as_json:
        print_json([{"name": s.name, "version": s.version, "target": s.target, "variant": s.variant,
                     "digest": s.digest, "path": str(s.directory)} for s in stored])
        return
    table = Table("name", "version", "target", "variant", "manifest digest")
    for s in stored:
        table.add_row(s.name, str(s.version), s.target, s.variant, s.digest[:19])
    console.print(table)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a stored module's manifest."""
    from edgeship.modules.store import ModuleStore
    from edgeship.registry import parse_model_ref

    parsed = parse_model_ref(ref)
    stored = ModuleStore(workspace_from(workspace)).get(parsed.name, parsed.version)
    print_json(json.loads(stored.manifest().to_bytes()))


def _module_dir(path: Path, workspace: Path | None) -> Path:
    if path.is_dir():
        return path
    text = str(path)
    if ":" in text and "/" not in text:
        from edgeship.modules.store import ModuleStore
        from edgeship.registry import parse_model_ref

        parsed = parse_model_ref(text, require_version=True)
        return ModuleStore(workspace_from(workspace)).get(parsed.name, parsed.version).directory
    raise InputError(f"{path} is not a module directory; give the folder 'edgeship package -o' wrote, or NAME:VERSION.")
