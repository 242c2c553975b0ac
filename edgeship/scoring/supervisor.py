"""The long-lived ``edgeship serve`` process: ``python -m edgeship.scoring.supervisor [--temporary-data-dir]``.

``edgeship serve`` (typer, rich, pydantic, the registry) prepares the model
layout and the :class:`ServiceConfig`, then ``exec``s this module in its own
process, with the configuration as JSON in ``EDGESHIP_SCORING_CONFIG``. What
stays alive is only what serving needs: with one worker it serves in-process,
with several it supervises the workers, and it never carries the CLI stack
(about 20 MiB per service). Same PID, same stdio, same exit codes as the CLI:
one sentence on stderr and 1 on an error, 0 after SIGTERM or SIGINT.

``--temporary-data-dir`` says the data folder was made for this run: on the way
out, whatever the reason (SIGTERM, SIGINT, a failed ``init()``), its model
layout is removed, and the folder too unless the service collected data in it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType

from edgeship.errors import EdgeshipError
from edgeship.scoring.config import ENV_CONFIG, ServiceConfig
from edgeship.scoring.layout import MODELS_FOLDER

__all__ = ["clean_temporary_data_dir", "hand_over", "main", "run"]


class _Stop(BaseException):
    """SIGTERM/SIGINT outside uvicorn's own handling (e.g. during ``init()``); not an Exception, so
    an entry script's ``except Exception`` cannot swallow it."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def clean_temporary_data_dir(root: Path) -> None:
    """Remove the model layout; remove the folder itself unless the service left data in it."""
    if not root.is_dir():
        return
    shutil.rmtree(root / MODELS_FOLDER, ignore_errors=True)
    if any(root.iterdir()):
        _say(f"Collected data kept in {root} (pass --data-dir to choose the folder).")
    else:
        root.rmdir()


def run(config: ServiceConfig, temporary_data_dir: bool = False) -> int:
    """Serve ``config`` until SIGTERM/SIGINT; returns the exit code (errors as one sentence on stderr)."""
    from edgeship.scoring.server import serve

    debug = os.environ.get("EDGESHIP_DEBUG") == "1"
    # uvicorn and the worker supervisor install their own handlers while they run and put these
    # back afterwards (uvicorn then re-raises the signal it caught): either way we end up in finally.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve(config, announce=_say)
        return 0
    except _Stop:
        return 0
    except EdgeshipError as exc:
        if debug:
            traceback.print_exc()
        _say(f"error: {exc}")
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _say(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback).")
        return 1
    finally:
        try:
            if temporary_data_dir:
                clean_temporary_data_dir(Path(config.data_dir))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def hand_over(config: ServiceConfig, temporary_data_dir: bool = False) -> int:
    """Replace this process (same PID and stdio) with a lean ``python -m edgeship.scoring.supervisor``.

    Returns only where exec cannot replace the process (Windows, no ``sys.executable``, exec
    failing): then it serves here and returns the exit code.
    """
    if sys.platform != "win32" and sys.executable:
        argv = [sys.executable, "-m", "edgeship.scoring.supervisor"]
        if temporary_data_dir:
            argv.append("--temporary-data-dir")
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError):  # if exec fails, serve in this process instead
            os.execve(sys.executable, argv, {**os.environ, ENV_CONFIG: config.to_json()})  # noqa: S606 (fixed argv)
    return run(config, temporary_data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeship.scoring.supervisor", description=__doc__)
    parser.add_argument(
        "--temporary-data-dir",
        action="store_true",
        help="the config's data_dir was made for this run: remove it on exit unless data was collected",
    )
    args = parser.parse_args(argv)
    try:
        config = ServiceConfig.from_env()
    except EdgeshipError as exc:
        _say(f"error: {exc}")
        return 1
    return run(config, args.temporary_data_dir)


if __name__ == "__main__":
    sys.exit(main())
