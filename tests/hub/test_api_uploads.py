"""Modules uploaded over HTTP (no folder shared with the hub): artifacts by digest, then the signed envelope.

Real uvicorn and httpx; modules signed by the world's release key (``HubWorld``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hub_world import HubWorld

from edgeship.hub.api import create_token
from edgeship.hub.client import HubClient, HubRequestError
from edgeship.hub.services import HubServices
from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE, ModuleManifest
from edgeship.signing import Signer


@pytest.fixture
def hub(base_url: str, service: HubServices) -> Iterator[HubClient]:
    with HubClient(base_url, create_token(service.store, "ci")) as client:
        yield client


def digests(directory: Path) -> list[str]:
    manifest = ModuleManifest.from_bytes((directory / MANIFEST_FILE).read_bytes())
    return [ref.digest for ref in manifest.files]


def test_a_module_travels_over_http_and_is_verified(hub: HubClient, world: HubWorld, service: HubServices) -> None:
    module = world.module("digits", 1)
    for digest in digests(module):
        with pytest.raises(HubRequestError) as missing:
            hub.request("GET", f"/uploads/{digest}")
        assert missing.value.status == 404
    uploaded = hub.upload_module_dir(module)
    assert (uploaded["name"], uploaded["version"]) == ("digits", 1)
    assert [m.ref for m in service.catalog.list_modules()] == ["digits:1"]
    for digest in digests(module):
        assert hub.request("GET", f"/uploads/{digest}")["digest"] == digest  # the hub holds it: no re-upload
        assert service.catalog.blob_file(digest).read_bytes() == (module / next(
            r.path for r in ModuleManifest.from_bytes((module / MANIFEST_FILE).read_bytes()).files
            if r.digest == digest)).read_bytes()
    again = hub.upload_module_dir(module)
    assert again["manifestDigest"] == uploaded["manifestDigest"], "the same module again changes nothing"


def test_bytes_that_do_not_hash_to_the_digest_are_refused_and_not_stored(hub: HubClient, service: HubServices) -> None:
    digest = "sha256:" + hashlib.sha256(b"the real bytes").hexdigest()
    with pytest.raises(HubRequestError) as refused:
        hub.request("PUT", f"/uploads/{digest}", content=b"other bytes", content_type="application/octet-stream")
    assert refused.value.status == 400 and "hash to sha256:" in str(refused.value)
    assert not service.catalog.has_upload(digest)
    assert hub.request("PUT", f"/uploads/{digest}", content=b"the real bytes",
                       content_type="application/octet-stream") == {"digest": digest, "size": 14}
    assert service.catalog.has_upload(digest)
    with pytest.raises(HubRequestError) as bad:
        hub.request("PUT", "/uploads/sha256:XYZ", content=b"x", content_type="application/octet-stream")
    assert bad.value.status == 400


def test_the_envelope_before_its_artifacts_names_what_is_missing(hub: HubClient, world: HubWorld,
                                                                 service: HubServices) -> None:
    module = world.module("digits", 2)
    envelope = json.loads((module / ENVELOPE_FILE).read_text())
    with pytest.raises(HubRequestError) as early:
        hub.request("POST", "/modules/signed", json={"envelope": envelope})
    assert early.value.status == 400 and digests(module)[0] in str(early.value)
    assert service.catalog.list_modules() == []


def test_a_module_not_signed_by_a_release_key_is_refused(hub: HubClient, world: HubWorld,
                                                         service: HubServices) -> None:
    module = world.module("digits", 3, signer=Signer.generate(name="stranger"))
    with pytest.raises(HubRequestError) as refused:
        hub.upload_module_dir(module)
    assert refused.value.status == 422
    assert service.catalog.list_modules() == []


def test_uploads_need_an_operator_token(base_url: str, service: HubServices) -> None:
    token = create_token(service.store, "dashboard", role="read-only")
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.put(f"/uploads/{digest}", content=b"x").status_code == 403
        assert client.get(f"/uploads/{digest}").status_code == 404  # reading whether it exists is allowed
        assert client.head(f"/uploads/{digest}").status_code in (404, 405)
    with httpx.Client(base_url=base_url) as anonymous:
        assert anonymous.put(f"/uploads/{digest}", content=b"x").status_code == 401
    assert not service.catalog.has_upload(digest)


def test_an_artifact_larger_than_the_json_body_limit_is_taken(hub: HubClient, service: HubServices) -> None:
    data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)  # 3 MiB: past the API's 1 MiB JSON bodies
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    hub.request("PUT", f"/uploads/{digest}", content=iter([data[:1 << 20], data[1 << 20:]]),
                content_type="application/octet-stream")
    assert service.catalog.has_upload(digest)
