"""Who may change a module's runtime services: the reconcile loop, or a direct method.

The reconcile loop and the method worker run in different threads (a ``logs`` call must
not wait behind a venv build). They share one :class:`ModuleGuard`:

- The loop holds :attr:`ModuleGuard.lock` only for the short parts of a pass: reading the
  current state and planning, then marking the modules its plan changes as *applying*.
  It runs the plan (downloads, installs, health checks: seconds to minutes) without the
  lock, and clears the mark when the pass ends.
- A state-changing method (``restart``) takes the lock for its whole change, so the loop
  never reads a module half-restarted; for a module the loop is applying it does not
  wait: :meth:`ModuleGuard.changing` raises :class:`ModuleBusy` (answered 409, "try again").

Invariant: while a module is marked applying, only the loop changes its services; while a
method holds the lock, the loop neither reads nor plans.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = ["ModuleBusy", "ModuleGuard"]


class ModuleBusy(Exception):
    """The reconcile loop is applying this module right now."""

    def __init__(self, module: str) -> None:
        super().__init__(f"Module {module!r} is being updated; try again when the device reports it applied.")
        self.module = module


class ModuleGuard:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._applying: frozenset[str] = frozenset()

    def mark_applying(self, modules: Iterable[str]) -> None:
        """Call with :attr:`lock` held, right after planning: these modules are the loop's until :meth:`done`."""
        self._applying = frozenset(modules)

    def done(self) -> None:
        with self.lock:
            self._applying = frozenset()

    @property
    def applying(self) -> frozenset[str]:
        return self._applying

    @contextmanager
    def changing(self, module: str) -> Iterator[None]:
        """Hold the lock while a method changes ``module``; :class:`ModuleBusy` if the loop is applying it."""
        with self.lock:
            if module in self._applying:
                raise ModuleBusy(module)
            yield
