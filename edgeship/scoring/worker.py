"""A scoring worker process: ``python -m edgeship.scoring.worker`` (started by ``server.py``).

Reads its :class:`ServiceConfig` from ``EDGESHIP_SCORING_CONFIG``, loads the
service, writes ``ready`` (or ``error <sentence>``) to the status pipe, then serves
on the inherited socket. :func:`app_from_env` is the same thing as a uvicorn
factory, for images that run ``uvicorn --factory edgeship.scoring.worker:app_from_env``.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from typing import Any

from edgeship.errors import EdgeshipError
from edgeship.scoring.config import ServiceConfig
from edgeship.scoring.server import ENV_FD, ENV_STATUS_FD, build_app, serve_app

__all__ = ["app_from_env", "main"]


def app_from_env() -> Any:
    return build_app(ServiceConfig.from_env())


def _report(line: str) -> None:
    fd = int(os.environ.get(ENV_STATUS_FD, "-1"))
    if fd >= 0:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8"))
        os.close(fd)


def main() -> int:
    try:
        config = ServiceConfig.from_env()
        app = build_app(config)
    except EdgeshipError as exc:
        if os.environ.get("EDGESHIP_DEBUG") == "1":
            traceback.print_exc()
        _report(f"error {exc}")
        return 3
    except BaseException as exc:
        traceback.print_exc()
        _report(f"error unexpected {type(exc).__name__} while starting a worker: {exc}")
        return 3
    sock = socket.socket(fileno=int(os.environ[ENV_FD]))
    _report("ready")
    serve_app(app, config, [sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
