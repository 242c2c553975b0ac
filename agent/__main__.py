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

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

PYTHON_FLAGS = ("-OO", "-X", "no_debug_ranges")  # interpreter flags the agent is started with


def main(argv: list[str] | None = None) -> int:
    from edgeship.agent import malloc

    malloc.limit_arenas(1)  # before any thread starts (ADR 0030)
    parser = argparse.ArgumentParser(prog="edgeship agent run", description="Run the edgeship agent.")
    parser.add_argument("--config", "-c", type=Path, required=True, help="the agent's TOML config file")
    parser.add_argument("--stop-modules-on-exit", action="store_true", help="stop the modules when the agent stops")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every command of a plan too")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("paho", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from edgeship.agent import faults
    from edgeship.agent.config import load_config
    from edgeship.agent.daemon import Agent
    from edgeship.errors import EdgeshipError

    try:
        faults.arm_from_env()  # test-only (EDGESHIP_AGENT_FAULT); unset on a device
        agent = Agent(load_config(args.config))
    except EdgeshipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run(stop, stop_modules=args.stop_modules_on_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
