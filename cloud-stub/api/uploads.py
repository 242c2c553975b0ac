"""Modules uploaded over HTTP: ``PUT /uploads/{digest}`` for each artifact, then ``POST /modules/signed``.

The release side (``edgeship module upload``, ``edgeship release``) sends what a module
directory holds without sharing a folder with the hub: first every artifact the
manifest names that the hub lacks (``HEAD /uploads/{digest}`` answers 200 when the hub
has it, so an artifact two modules share — a wheel, a model — travels once), then the
release-signed envelope. The hub stores an artifact only if its bytes hash to the
digest in the path, and takes the module only after verifying the envelope against its
release keys and every artifact against the manifest (``Catalog.upload_signed``).
Operator tokens only; the request body of an artifact is bounded by
``MAX_UPLOAD_BYTES``, not by the API's 1 MiB limit for JSON bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from edgeship.hub.api.deps import get_catalog, require_operator
from edgeship.hub.api.responses import OPERATOR, errors
from edgeship.hub.api.schemas import ModuleOut, _Body
from edgeship.hub.services import Catalog
from edgeship.hub.services.catalog import MAX_UPLOAD_BYTES

__all__ = ["router"]

router = APIRouter(tags=["modules"], dependencies=[Depends(require_operator)], responses=OPERATOR)

Digest = Annotated[str, Path(description="The artifact's 'sha256:<hex>' digest, as the module's manifest names it.",
                             examples=["sha256:" + "0" * 64])]


class UploadOut(BaseModel):
    digest: str
    size: int = Field(description="Bytes the hub holds under this digest.")


_BINARY_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


class SignedModuleIn(_Body):
    """A module's release-signed DSSE envelope (``module.dsse.json``); its payload is the manifest."""

    envelope: dict[str, Any] = Field(description="payloadType, payload (base64 manifest), signatures.")


@router.get("/uploads/{digest}", response_model=UploadOut, responses=errors(400, 404, 422))
def has_upload(digest: Digest, catalog: Catalog = Depends(get_catalog)) -> UploadOut:
    """The artifact's size when the hub holds it (skip its upload); 404 when it does not."""
    return UploadOut(digest=digest, size=catalog.upload_size(digest))


@router.put("/uploads/{digest}", response_model=UploadOut, status_code=201, max_body_size=MAX_UPLOAD_BYTES,
            openapi_extra=_BINARY_BODY, responses={200: {"description": "The hub had it already.", "model": UploadOut},
                                                   **errors(400, 404, 413, 422)})
async def put_upload(
    digest: Digest, request: Request, response: Response, catalog: Catalog = Depends(get_catalog),
) -> UploadOut:
    """Store one artifact (the raw bytes as the body): 201 stored, 200 the hub had it already; 400 when the bytes
    do not hash to the digest (nothing is stored)."""
    # Content-Length is read here, not declared as a parameter: the server framing owns it
    length = request.headers.get("content-length", "")
    declared = int(length) if length.isdigit() else None
    if not await catalog.receive_upload(digest, request.stream(), declared=declared):
        response.status_code = 200
    return UploadOut(digest=digest, size=catalog.upload_size(digest))


@router.post("/modules/signed", response_model=ModuleOut, status_code=201, responses=errors(400, 409, 413, 422))
def upload_signed(body: SignedModuleIn, catalog: Catalog = Depends(get_catalog)) -> ModuleOut:
    """Verify a release-signed module whose artifacts were uploaded, and take it; the same module again is a no-op."""
    return ModuleOut.of(catalog.upload_signed(body.envelope))
