"""Getting artifacts onto the device: bounded transfers (``bounded``), the blob cache (``download``), disk space."""

from __future__ import annotations

from edgeship.agent.fetch.download import BlobCache, DownloadError

__all__ = ["BlobCache", "DownloadError"]
