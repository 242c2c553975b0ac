"""``edgeship init``: create a workspace."""

from __future__ import annotations

import typer

from edgeship.cli._common import WorkspaceOpt, console, workspace_from

__all__ = ["register"]


def init(workspace: WorkspaceOpt = None) -> None:
    """Create a workspace: registry.db, the blob store, keys/ and modules/."""
    ws = workspace_from(workspace, must_exist=False)
    created = ws.create()
    console.print(("Created" if created else "Workspace already exists at") + f" {ws.root}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
