"""glibc's allocator, tuned for a long-running agent with several threads (ADR 0030).

glibc gives each thread that allocates its own malloc arena (up to 8 per core), and
pages an arena touched stay in the process's resident set; the agent's threads (loop,
paho's network thread, methods, telemetry) each allocate a little, so each held its own
partly used arena. :func:`limit_arenas` makes them share one (``M_ARENA_MAX``; set before
any thread starts, as the ``MALLOC_ARENA_MAX`` environment variable would); the agent's
threads mostly wait, so contention on that one arena costs nothing measurable.
:func:`trim` hands freed heap pages back to the kernel (``malloc_trim``): the agent calls
it after each telemetry sample, so what an install or a reconcile pass freed does not
stay resident. Both do nothing where the C library lacks them (musl, macOS).
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["limit_arenas", "trim"]

_M_ARENA_MAX = -8  # glibc's malloc.h


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the process's own symbols, the C library's among them
    except OSError:
        return None


def limit_arenas(count: int = 1) -> bool:
    """Let every thread allocate from at most ``count`` arenas; True when the C library took it."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(count)))


def trim() -> bool:
    """Return free heap pages to the kernel; True when some were returned."""
    libc = _libc()
    malloc_trim = getattr(libc, "malloc_trim", None)
    if malloc_trim is None:
        return False
    return bool(malloc_trim(ctypes.c_size_t(0)))
