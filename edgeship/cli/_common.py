"""What every CLI command shares: the workspace option, consoles, key=value parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgeship.errors import InputError
from edgeship.workspace import ENV_HOME, Workspace

__all__ = ["WorkspaceOpt", "console", "err_console", "parse_pairs", "print_json", "workspace_from"]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        envvar=ENV_HOME,
        help="Workspace folder (default: $EDGESHIP_HOME or ~/.edgeship).",
        show_default=False,
    ),
]


def workspace_from(path: Path | None, *, must_exist: bool = True) -> Workspace:
    ws = Workspace.at(path)
    return ws.require() if must_exist else ws


def parse_pairs(kind: str, items: list[str] | None) -> dict[str, str]:
    """Turn ``["k=v", ...]`` into a dict; a malformed item is an InputError naming it."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"Invalid {kind} {item!r}: write it as key=value.")
        pairs[key.strip()] = value
    return pairs


def print_json(data: Any) -> None:
    # Plain print: rich would re-wrap long lines and break machine-readable output.
    typer.echo(json.dumps(data, indent=2, sort_keys=True))
