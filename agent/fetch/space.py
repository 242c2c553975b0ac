"""Is there room for an update? Decided before any byte is downloaded.

A device whose disk fills up fails in ways nothing recovers from remotely (balena's
supervisor dies on a full disk; SQLite, the state files and the modules' logs stop
being written). So an update is refused, with a report that says how much it needs
and how much is free, unless the disk keeps ``min_free_bytes`` free *after* the
missing artifacts are downloaded and installed. :func:`check_space` is pure; the
executor measures the free space (``shutil.disk_usage``) and what is already cached.
"""

from __future__ import annotations

from edgeship.errors import EdgeshipError

__all__ = ["NotEnoughSpaceError", "check_space", "human_bytes"]


class NotEnoughSpaceError(EdgeshipError):
    """The disk cannot hold an update and still keep ``min_free_bytes`` free; nothing was downloaded."""


def human_bytes(count: int) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes in messages people read."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_space(service: str, *, download: int, unpack: int, free: int, margin: int, where: str) -> None:
    """Raise :class:`NotEnoughSpaceError` unless ``download + unpack + margin <= free`` (all in bytes)."""
    need = download + unpack
    if need + margin <= free:
        return
    raise NotEnoughSpaceError(
        f"Not enough disk space for {service}: it needs {human_bytes(need)} ({human_bytes(download)} to download, "
        f"{human_bytes(unpack)} to unpack) and {human_bytes(margin)} must stay free (min_free_bytes), but only "
        f"{human_bytes(free)} are free on {where}. Nothing was downloaded; free some space (or lower "
        "min_free_bytes in agent.toml), and the agent tries again after its cool-off."
    )
