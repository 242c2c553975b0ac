"""``python -m edgeship.agent --config agent.toml``: the agent without the CLI around it.

``edgeship agent run`` execs into this, so the long-running agent process holds
neither typer, rich nor the other commands' imports (``docs/agent.md``: idle RSS).
Exit codes: 0 after SIGTERM/SIGINT, 1 for a configuration error (one line on stderr).

The agent runs best as ``python -OO -X no_debug_ranges -m edgeship.agent``
(:data:`PYTHON_FLAGS`, what ``edgeship agent run`` execs): without docstrings and
column tables its code objects take 1 MiB less (ADR 0030). Nothing in the agent reads
a docstring or relies on ``assert``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

PYTHON_FLAGS = ("-OO", "-X", "no_debug_ranges")  # interpreter flags the agent is started with


USAGE = "usage: edgeship agent run --config FILE [--stop-modules-on-exit] [--verbose]"
HELP = """Run the edgeship agent.

  -c, --config FILE         the agent's TOML config file
  --stop-modules-on-exit    stop the modules when the agent stops
  -v, --verbose             log every command of a plan too
  -h, --help                show this help"""


def parse_args(argv: list[str]) -> tuple[Path, bool, bool]:
    """``(config, stop_modules_on_exit, verbose)`` from the command line; exits 2 with one line on bad usage.

    Read by hand, not with ``argparse``: importing it (and ``gettext``) held 0.5 MiB of the
    idle agent for three options (ADR 0030).
    """
    config: str | None = None
    stop_modules = verbose = False
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(f"{USAGE}\n\n{HELP}")
            raise SystemExit(0)
        if arg in ("-c", "--config"):
            config = next(args, None)
            if config is None:
                _usage(f"{arg} needs the config file after it")
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg == "--stop-modules-on-exit":
            stop_modules = True
        elif arg in ("-v", "--verbose"):
            verbose = True
        else:
            _usage(f"unknown argument {arg!r}")
    if not config:
        _usage("--config FILE is required")
    return Path(config or ""), stop_modules, verbose


def _usage(problem: str) -> None:
    print(f"{USAGE}\nerror: {problem}; see --help.", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    from edgeship.agent import malloc

    malloc.limit_arenas(1)  # before any thread starts (ADR 0030)
    config, stop_modules_on_exit, verbose = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("paho", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from edgeship.agent.lazy import LAZY_MODULES, import_lazily

    for name in LAZY_MODULES:
        import_lazily(name)  # before paho-mqtt imports it (ADR 0043)
    from edgeship.agent import faults
    from edgeship.agent.config import load_config
    from edgeship.agent.daemon import Agent
    from edgeship.errors import EdgeshipError

    try:
        faults.arm_from_env()  # test-only (EDGESHIP_AGENT_FAULT); unset on a device
        agent = Agent(load_config(config))
    except EdgeshipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run(stop, stop_modules=stop_modules_on_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
