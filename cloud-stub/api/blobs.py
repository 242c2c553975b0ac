"""``GET /blobs/sha256:<hex>``: module artifacts by digest, with single byte ranges so downloads resume.

The digest is the address, so a response never changes: it is cacheable forever
and its ETag is the digest. Range handling (RFC 9110 §14):

- ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` give 206 with ``Content-Range``;
- a malformed byte range, or one that starts past the end, gives 416 with
  ``Content-Range: bytes */size``, so a client learns the size and restarts;
- several ranges, or another unit, are ignored (RFC 9110 allows it): 200, whole blob;
- ``If-Range`` with an ETag other than the digest's sends the whole blob.

Blobs need no operator token: devices fetch them, and the digests they trust come
from release-signed manifests, not from this server (device credentials: later).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import StreamingResponse

from edgeship.hub.api.deps import get_catalog
from edgeship.hub.api.responses import errors
from edgeship.hub.services import Catalog

__all__ = ["CHUNK", "RangeNotSatisfiable", "parse_range", "router"]

CHUNK = 256 * 1024  # bytes per read while streaming a blob
_BYTES = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")

router = APIRouter(tags=["blobs"])


class RangeNotSatisfiable(Exception):
    """An HTTP-only condition (416); never leaves this module."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte positions a Range header asks for, or ``None`` to send everything."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _BYTES.match(spec)
    if match is None or match.group(0).strip() == "-":
        raise RangeNotSatisfiable
    first_text, last_text = match.groups()
    if first_text == "":  # suffix: the last n bytes
        length = int(last_text)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - length), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


def _stream(path: FilePath, first: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(first)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole blob.", "content": _BINARY},
    206: {"description": "The byte range asked for; Content-Range says which.", "content": _BINARY},
    **errors(400, 404, 416, 422, 503),
}


@router.get("/blobs/{digest}", response_class=Response, responses=_RESPONSES)
@router.head("/blobs/{digest}", response_class=Response, include_in_schema=False)
def get_blob(
    digest: Annotated[str, Path(description="The artifact's 'sha256:<hex>' digest.",
                                examples=["sha256:" + "0" * 64])],
    request: Request,
    range_header: str | None = Header(default=None, alias="range"),
    if_range: str | None = Header(default=None, alias="if-range"),
    catalog: Catalog = Depends(get_catalog),
) -> Response:
    """A module artifact by its ``sha256:<hex>`` digest; send ``Range`` to resume a download."""
    path = catalog.blob_file(digest)
    size = path.stat().st_size
    etag = f'"{digest}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    span: tuple[int, int] | None = None
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        try:
            span = parse_range(range_header, size)
        except RangeNotSatisfiable:
            return Response(
                status_code=416,
                headers={**headers, "Content-Range": f"bytes */{size}"},
                content=f"Range {range_header!r} is not satisfiable for a blob of {size} bytes.",
                media_type="text/plain",
            )
    first, last, status = (0, size - 1, 200) if span is None else (span[0], span[1], 206)
    length = last - first + 1
    headers["Content-Length"] = str(length)
    if status == 206:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        _stream(path, first, length), status_code=status, headers=headers, media_type="application/octet-stream"
    )
