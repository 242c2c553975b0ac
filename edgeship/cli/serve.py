"""``edgeship serve``: run the scoring server (filled in with the scoring server)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    del app
