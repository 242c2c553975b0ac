"""``edgeship demo``: the whole system on this machine in one command (``edgeship.demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli._common import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the hub, its dashboard and the agents running until Ctrl-C, and keep the demo folder.",
    )] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Work in this folder instead of a new temporary one (kept).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each waiting step may take.", min=1)] = 120.0,
) -> None:
    """Hub + embedded broker + 3 local agents: package, sign, deploy by tags, score, update, report."""
    from edgeship.demo.run import DemoOptions, run_demo

    if directory is not None and directory.exists() and any(directory.iterdir()):
        from edgeship.errors import InputError

        raise InputError(f"--dir {directory} is not empty; give a new or empty folder.")
    run_demo(DemoOptions(keep=keep, directory=directory, timeout=timeout), console)
