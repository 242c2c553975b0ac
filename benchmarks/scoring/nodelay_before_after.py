"""`edgeship serve` with the listening socket as it was before 205790e (proto 0), for a before/after check.

    python benchmarks/scoring/nodelay_before_after.py before serve --entry-script score.py ...
    python benchmarks/scoring/nodelay_before_after.py after serve --entry-script score.py ...

``before`` binds with proto 0, so asyncio leaves Nagle on and each keep-alive
response waits for the client's delayed ACK; ``after`` is the current code.
RESULTS.md lists the wrk commands run against both.
"""

import socket
import sys

import edgeship.scoring.server as server
from edgeship.errors import InputError


def _bind_proto0(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0: asyncio skips TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise InputError(str(exc)) from exc
    sock.set_inheritable(True)
    return sock


if sys.argv[1] == "before":
    server._bind = _bind_proto0
sys.argv = ["edgeship", *sys.argv[2:]]
from edgeship.cli import main  # noqa: E402

main()
