"""Getting artifacts onto the device: blob download with resume and digest check."""

from __future__ import annotations

from edgeship.agent.fetch.download import BlobCache, DownloadError

__all__ = ["BlobCache", "DownloadError"]
