"""Atomic file-system writes: nothing half-written is ever left where a reader looks.

Scratch files and folders sit beside their target under a name that starts with a dot
and carries the writer's pid (``.<name>.tmp-<pid>-…``, ``.<name>.building-<pid>-…``,
``.<name>.old-<pid>``). A process killed mid-write leaves one; :func:`sweep_scratch`
removes those whose writer is gone, so a restarted owner (the agent) cleans up after
its previous life without touching the scratch of a writer that still runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text", "scratch_dir", "sweep_scratch"]

_SCRATCH = re.compile(r"^\..+\.(?:tmp|building|old)-(\d+)(?:-|$)")  # group 1: the writer's pid


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder beside ``target``; on success it replaces ``target`` whole.

    On any exception (Ctrl-C included) the scratch folder is removed and ``target``
    is left exactly as it was.
    """
    build = scratch_dir(target)
    try:
        yield build
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(build, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(build, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def scratch_dir(target: Path, name: str | None = None) -> Path:
    """A new empty folder beside ``target`` (``.<name>.building-<pid>-…``) that :func:`sweep_scratch` knows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name or target.name}.building-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True


def sweep_scratch(folder: Path) -> list[Path]:
    """Remove the scratch files and folders in ``folder`` whose writer no longer runs; return them.

    Scratch of this very process counts as abandoned: call it before this process writes
    anything there (at start), which also covers a restart that was given its old pid
    again (pid 1 in a container). A pid reused by an unrelated process keeps its scratch
    until a later sweep: a leftover is never worse than deleting a live writer's work.
    """
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _SCRATCH.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed
