"""Run ``python -m edgeship.agent`` under tracemalloc; SIGUSR1 writes where its Python heap is.

Used by ``lean.py --tracemalloc`` (a separate run: tracemalloc's own bookkeeping
inflates RSS, so that run's RSS is not the agent's). On SIGUSR1 the agent's loop thread
writes ``$EDGESHIP_TRACE_OUT`` as JSON: the traced total, the heap grouped by top-level
package (by the file that allocated, so a module's code objects count to the module),
the largest files, and the modules loaded.

    python benchmarks/agent/traced_agent.py --config agent.toml   # then kill -USR1 PID
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

_ROOT = Path(__file__).resolve().parents[2]
_COMPONENTS = {"agent": "edgeship.agent", "cloud-stub": "edgeship.hub", "packager": "edgeship.packager"}


def _package(filename: str) -> str:
    path = Path(filename)
    if path.is_relative_to(_ROOT) and path.relative_to(_ROOT).parts[0] in _COMPONENTS:
        inside = path.relative_to(_ROOT).parts
        return ".".join([_COMPONENTS[inside[0]], *(p.removesuffix(".py") for p in inside[1:2])])
    parts = path.parts
    for marker in ("site-packages", "edgeship"):
        if marker in parts:
            index = parts.index(marker)
            tail = parts[index + 1 :] if marker == "site-packages" else parts[index:]
            return ".".join(p.removesuffix(".py") for p in tail[:2]) if tail[0] == "edgeship" else tail[0]
    if filename.startswith("<"):
        return filename
    return "stdlib:" + (parts[-2] if parts[-1] == "__init__.py" else path.stem)


def _dump(_signum: int, _frame: FrameType | None) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    by_file = snapshot.statistics("filename")
    packages: dict[str, int] = {}
    for stat in by_file:
        name = _package(stat.traceback[0].filename)
        packages[name] = packages.get(name, 0) + stat.size
    out = {
        "traced_kib": tracemalloc.get_traced_memory()[0] // 1024,
        "packages_kib": {k: v // 1024 for k, v in sorted(packages.items(), key=lambda kv: -kv[1])[:30]},
        "files_kib": {s.traceback[0].filename: s.size // 1024 for s in by_file[:30]},
        "modules": sorted(sys.modules),
    }
    Path(os.environ["EDGESHIP_TRACE_OUT"]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    tracemalloc.start()
    signal.signal(signal.SIGUSR1, _dump)
    from edgeship.agent.__main__ import main

    sys.exit(main(sys.argv[1:]))
