"""The ``edgeship`` command: one typer app; each area adds its commands from its own module.

Errors are one sentence on stderr with exit code 1 (2 for usage errors, as click
does); ``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from edgeship import __version__
from edgeship.cli import agent as _agent
from edgeship.cli import azureml as _azureml
from edgeship.cli import batch as _batch
from edgeship.cli import broker_config as _broker_config
from edgeship.cli import demo as _demo
from edgeship.cli import deploy as _deploy
from edgeship.cli import fleet as _fleet
from edgeship.cli import fpga as _fpga
from edgeship.cli import hub as _hub
from edgeship.cli import keys as _keys
from edgeship.cli import model as _model
from edgeship.cli import module as _module
from edgeship.cli import package as _package
from edgeship.cli import profile as _profile
from edgeship.cli import provision as _provision
from edgeship.cli import release as _release
from edgeship.cli import rollout as _rollout  # noqa: F401 - adds its commands to 'deployment'
from edgeship.cli import serve as _serve
from edgeship.cli import workspace as _workspace
from edgeship.cli._common import err_console
from edgeship.errors import EdgeshipError

__all__ = ["app", "main"]

app = typer.Typer(
    name="edgeship",
    help="Ship machine-learning models to the edge: registry, scoring, signed modules, fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeship {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (anywhere on the line)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Ship machine-learning models to the edge."""


_workspace.register(app)
app.add_typer(_model.app, name="model")
_profile.register(_model.app)
app.add_typer(_module.app, name="module")
_package.register(app)
_serve.register(app)
_keys.register(app)
_deploy.register(app)
_release.register(app)
_hub.register(app)
_fleet.register(app)
_demo.register(app)
app.add_typer(_fpga.app, name="fpga")
_provision.register(app)
_broker_config.register(app)
app.add_typer(_agent.app, name="agent")
app.add_typer(_azureml.app, name="azureml")
app.add_typer(_batch.app, name="batch")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps errors to one clear sentence and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("EDGESHIP_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    if debug:
        os.environ["EDGESHIP_DEBUG"] = "1"  # child processes (scoring workers) inherit it
    try:
        app(args=args, prog_name="edgeship")
    except EdgeshipError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback).",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
