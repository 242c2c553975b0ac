"""``edgeship agent``: run the on-device agent, show its local state, write an example config."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import typer

from edgeship.errors import EdgeshipError

__all__ = ["app"]

app = typer.Typer(help="The on-device agent: applies signed deployment documents from the hub.", no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", "-c", help="The agent's TOML config file (docs/agent.md).")


@app.command("run")
def run(
    config: Path = _CONFIG,
    stop_modules_on_exit: bool = typer.Option(
        False, "--stop-modules-on-exit", help="Stop the modules when the agent stops (default: they keep serving)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every command of a plan too."),
) -> None:
    """Run the agent until Ctrl-C or SIGTERM (modules keep serving unless --stop-modules-on-exit)."""
    from edgeship.agent.__main__ import PYTHON_FLAGS
    from edgeship.agent.config import load_config

    load_config(config)  # fail here, with the CLI's error formatting, before exec
    argv = [sys.executable, *PYTHON_FLAGS, "-m", "edgeship.agent", "--config", str(config)]
    argv += ["--stop-modules-on-exit"] if stop_modules_on_exit else []
    argv += ["--verbose"] if verbose else []
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606  # fixed argv; same pid, so signals reach the agent


@app.command("status")
def status(
    config: Path = _CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
) -> None:
    """Show the agent's local state: last applied sequence and its modules."""
    from edgeship.agent.config import load_config
    from edgeship.agent.daemon import make_runtime
    from edgeship.agent.state.store import StateStore

    cfg = load_config(config)
    store = StateStore(cfg.data_dir)
    state = store.state
    runtime = make_runtime(cfg.runtime, cfg.data_dir)
    rows = []
    for module, service in sorted(state.active.items()):
        rec = state.services.get(service)
        now: str = "missing"
        port: int | None = rec.port if rec else None
        with contextlib.suppress(EdgeshipError):  # no such service: shown as missing
            live = runtime.status(service)
            now, port = live.state, live.port
        rows.append({"module": module, "version": rec.version if rec else None, "service": service,
                     "status": now, "port": port})
    if as_json:
        typer.echo(json.dumps({"deviceId": cfg.device_id, "lastAppliedSequence": state.last_applied_sequence,
                               "modules": rows}, indent=2))
        return
    typer.echo(f"device {cfg.device_id}: last applied sequence {state.last_applied_sequence}")
    for row in rows:
        line = f"  {row['module']:<20} v{row['version']}  {row['service']:<24} {row['status']:<8} port {row['port']}"
        typer.echo(line)
    if not rows:
        typer.echo("  (no modules)")


@app.command("init-config")
def init_config(
    output: Path = typer.Argument(Path("agent.toml"), help="Where to write the example config."),
    device_id: str = typer.Option("dev-1", "--device-id", help="The device's id."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented example agent.toml."""
    from edgeship.agent.config import example_config
    from edgeship.errors import InputError

    if output.exists() and not force:
        raise InputError(f"{output} exists; pass --force to overwrite it.")
    output.write_text(example_config(device_id))
    typer.echo(f"wrote {output}")
