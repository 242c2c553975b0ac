"""``edgeship keys ...``: create, list and export signing keys (filled in with signing)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    del app
