"""``edgeship azureml run deploy.py [ARGS]``: an unmodified Azure ML v1 deployment script, on edgeship.

The script runs in this process with :mod:`edgeship.azureml`'s modules under the
``azureml`` names (for this command only). The layer's own refusals and failures are
one sentence, as every edgeship error; the script's own exceptions keep their
traceback, as ``python deploy.py`` would print it.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli._common import WorkspaceOpt
from edgeship.errors import EdgeshipError
from edgeship.workspace import ENV_HOME

__all__ = ["app"]

app = typer.Typer(help="Run Azure ML v1 (azureml-core) deployment scripts on edgeship.", no_args_is_help=True)


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    script: Annotated[Path, typer.Argument(help="The v1 deployment script (deploy.py), unedited.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Run SCRIPT with an azureml.core-compatible layer; arguments after it go to the script."""
    from edgeship.azureml import run_script

    if workspace is not None:
        os.environ[ENV_HOME] = str(workspace)  # Workspace.from_config() inside the script uses it
    try:
        run_script(script, list(ctx.args))
    except (EdgeshipError, SystemExit, KeyboardInterrupt):
        raise
    except Exception:  # the script's own failure: its traceback, as python prints it
        traceback.print_exc()
        sys.exit(1)
