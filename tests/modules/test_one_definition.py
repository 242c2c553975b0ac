"""One definition of the documents: the agent's parsers and the hub's pydantic models agree.

The agent reads deployment documents with ``edgeship.deployment.parse_document`` and
manifests with ``edgeship.modules.plain.parse_manifest`` (no pydantic in its process);
the hub and the packager use the pydantic models. A corpus of valid and invalid
documents goes to both, the models judged on their own (``model_validate_json``, not
``from_bytes``, which runs the agent's rules first): every verdict must match, and an
accepted document must read the same, field for field.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeship.deployment import Document, parse_document
from edgeship.deployment_model import DeploymentDocument
from edgeship.errors import ManifestError
from edgeship.modules.manifest import ModuleManifest
from edgeship.modules.plain import parse_manifest

DIGEST = "sha256:" + "ab" * 32
ENVELOPE = {"payloadType": "application/vnd.edgeship.module+json", "payload": base64.b64encode(b"{}").decode(),
            "signatures": [{"keyid": "k1", "sig": base64.b64encode(b"s" * 64).decode()}]}  # fmt: skip
DOCUMENT: dict[str, Any] = {
    "schemaVersion": 1,
    "deviceId": "dev-1",
    "sequence": 7,
    "issuedAt": "2026-01-01T00:00:00Z",
    "expires": "2026-01-08T00:00:00Z",
    "modules": {
        "digits": {"module": ENVELOPE, "blobs": {"bundle": "/blobs/" + DIGEST, "image": "https://hub/x"},
                   "settings": {"port": 5001, "restartPolicy": "always", "env": {}}},
        "other.mod_2": {"module": ENVELOPE, "blobs": {"bundle": "http://hub/b"}},
    },
    "deployments": ["d1", "d2"],
}
MANIFEST: dict[str, Any] = {
    "schemaVersion": 1,
    "name": "digits",
    "version": 3,
    "variant": "int8",
    "target": "iotedge",
    "models": [{"name": "digits", "version": 1, "digest": DIGEST, "framework": "onnx"}],
    "entryScript": "src/score.py",
    "sourceDirectory": "src",
    "environment": {"lockDigest": DIGEST, "python": "3.11", "requirements": ["numpy==2.0"]},
    "bundle": {"path": "bundle.tar", "digest": DIGEST, "size": 10},
    "image": {"id": DIGEST, "tag": "digits:3", "baseImage": "python:3.11-slim",
              "archive": {"path": "image.tar", "digest": DIGEST, "size": 5}},
    "resources": {"cpu": 0.5, "memoryInGB": 1, "cpuLimit": 2, "memoryInGBLimit": 1.5, "accelerator": "gpu"},
    "ports": [5001, 8080],
    "authEnabled": True,
    "openapiDigest": DIGEST,
    "executionProviders": ["CPUExecutionProvider"],
    "files": [{"path": "bundle.tar", "digest": DIGEST, "size": 10}, {"path": "image.tar", "digest": DIGEST, "size": 5}],
}

Edit = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for key in parents:
            doc = doc[int(key)] if isinstance(doc, list) else doc[key]
        if isinstance(doc, list):
            doc[int(last)] = value
        else:
            doc[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for key in parents:
            doc = doc[key]
        del doc[last]

    return edit


WRONG_VALUES = [None, True, 0, -1, 1.5, "x", "", [], {}, 2**40]
DOCUMENT_FIELDS = ["deviceId", "sequence", "issuedAt", "expires", "modules", "deployments", "modules/digits/module",
                   "modules/digits/blobs", "modules/digits/blobs/bundle", "modules/digits/blobs/image",
                   "modules/digits/settings", "modules/digits/settings/port", "modules/digits/settings/restartPolicy",
                   "modules/digits/settings/env", "deployments/0", "modules/digits/module/payload"]  # fmt: skip
MANIFEST_FIELDS = ["schemaVersion", "name", "version", "variant", "target", "models", "models/0/name",
                   "models/0/version", "models/0/digest", "models/0/framework", "entryScript", "sourceDirectory",
                   "environment", "environment/lockDigest", "environment/python", "environment/requirements",
                   "bundle", "bundle/path", "bundle/digest", "bundle/size", "image", "image/id", "image/archive",
                   "image/archive/path", "image/archive/size", "resources", "resources/cpu", "resources/memoryInGB",
                   "resources/accelerator", "ports", "ports/0", "authEnabled", "openapiDigest", "executionProviders",
                   "files", "files/0/path", "files/0/digest", "files/0/size"]  # fmt: skip


def _document_edits() -> Iterator[tuple[str, Edit]]:
    yield "valid", lambda d: None
    for field in DOCUMENT_FIELDS:
        for value in WRONG_VALUES:
            yield f"{field}={value!r}", _set(field, value)
    required = ("deviceId", "sequence", "issuedAt", "expires", "modules/digits/blobs/bundle", "modules/digits/module")
    for field in required:
        yield f"no {field}", _drop(field)
    for field in ("modules", "deployments", "modules/digits/settings", "modules/digits/blobs/image",
                  "modules/digits/settings/port", "modules/digits/settings/env"):  # fmt: skip
        yield f"no {field} (defaulted)", _drop(field)
    for when in ("2026-01-01T00:00:00", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00Z",
                 "2026-01-01T00:00:00+01:00", "2026-01-01", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z",
                 "1767225600", "2026-01-01T00:00:00.123456Z", "2025-12-31T23:59:59Z", "2026-01-08T00:00:00Z",
                 "2026-01-01 00:00:00Z", "2026-01-01T00:00:00z", "2026-01-01T00:00:00-00:00", "2026-01-01T00:00:60Z",
                 "2026-1-1T00:00:00Z", "2026-01-01T00:00:00UTC", "2026-01-01t00:00:00Z",
                 "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00+0000"):
        yield f"issuedAt={when}", _set("issuedAt", when)
    yield "sequence at the top", _set("sequence", 2**31 - 1)
    yield "sequence past the top", _set("sequence", 2**31)
    yield "deviceId of 128", _set("deviceId", "d" * 128)
    yield "deviceId of 129", _set("deviceId", "d" * 129)
    yield "env set", _set("modules/digits/settings/env", {"LD_PRELOAD": "/x.so"})
    yield "command in settings", _set("modules/digits/settings/command", ["sh"])
    yield "unknown top key", _set("extra", 1)
    yield "unknown blob key", _set("modules/digits/blobs/layer", "/x")
    yield "python names", lambda d: d.update(device_id=d.pop("deviceId"), issued_at=d.pop("issuedAt"))
    yield "python name in settings", _set("modules/digits/settings/restart_policy", "never")
    yield "alias and name", _set("device_id", "dev-1")
    yield "port 65535", _set("modules/digits/settings/port", 65535)
    yield "port 65536", _set("modules/digits/settings/port", 65536)
    yield "blob ftp", _set("modules/digits/blobs/bundle", "ftp://x")
    for name in ("a", "A" * 48, "A" * 49, "-x", "x y", "digits/x", "Digits", "é", "x.a"):
        yield f"module name {name!r}", _set(f"modules/{name}", copy.deepcopy(DOCUMENT["modules"]["other.mod_2"]))
    yield "bad signature base64", _set("modules/digits/module/signatures", [{"sig": "!!"}])
    yield "expires == issuedAt", _set("expires", DOCUMENT["issuedAt"])


def _manifest_edits() -> Iterator[tuple[str, Edit]]:
    yield "valid", lambda d: None
    for field in MANIFEST_FIELDS:
        for value in WRONG_VALUES:
            yield f"{field}={value!r}", _set(field, value)
    for field in ("name", "version", "models", "environment", "bundle", "files", "bundle/digest", "files/0/size",
                  "image/tag", "environment/python"):  # fmt: skip
        yield f"no {field}", _drop(field)
    for field in ("schemaVersion", "variant", "target", "entryScript", "image", "resources", "ports", "authEnabled",
                  "openapiDigest", "executionProviders", "bundle/path", "image/archive", "models/0/framework",
                  "environment/requirements", "resources/accelerator"):  # fmt: skip
        yield f"no {field} (defaulted)", _drop(field)
    for path in ("/abs", "a/../b", "..", "a/./b", "a//b", "ok/file.bin"):
        yield f"artifact path {path!r}", _set("files/0/path", path)
    yield "digest upper", _set("bundle/digest", DIGEST.upper().replace("SHA256", "sha256"))
    yield "digest newline", _set("bundle/digest", DIGEST + "\n")
    yield "unknown key", _set("command", ["sh"])
    yield "python names", lambda d: d.update(entry_script=d.pop("entryScript"), auth_enabled=d.pop("authEnabled"))
    yield "alias and name", _set("entry_script", "src/score.py")
    yield "schemaVersion 2", _set("schemaVersion", 2)
    yield "accelerator fpga", _set("resources/accelerator", "fpga")


def _raw_cases(base: dict[str, Any]) -> list[tuple[str, bytes]]:
    text = json.dumps(base)
    return [
        ("duplicate key", text.replace('"schemaVersion": 1', '"schemaVersion": 1, "schemaVersion": 1', 1).encode()),
        ("NaN", text.replace("}", ', "x": NaN}', 1).encode()),
        ("not JSON", b"{"),
        ("array", b"[]"),
        ("latin-1", text.replace('"x"', '"\xe9"').encode("latin-1")),
        ("lone surrogate", text.replace('"d1"', '"\\ud800"').replace('"digits"', '"\\ud800"', 1).encode()),
    ]


def _corpus(base: dict[str, Any], edits: Iterator[tuple[str, Edit]]) -> list[tuple[str, bytes]]:
    cases = []
    for name, edit in edits:
        doc = copy.deepcopy(base)
        try:
            edit(doc)
        except (KeyError, IndexError, TypeError):
            continue  # the edit does not apply to this shape
        cases.append((name, json.dumps(doc).encode()))
    return cases + _raw_cases(base)


def _pydantic_document(data: bytes) -> DeploymentDocument | None:
    """The model's own verdict: its prechecks (schemaVersion), then ``model_validate_json``."""
    from pydantic import ValidationError

    try:
        version = json.loads(data).get("schemaVersion")
    except (ValueError, AttributeError):
        return None
    if version != 1 or isinstance(version, bool):
        return None
    try:
        return DeploymentDocument.model_validate_json(data)
    except ValidationError:
        return None


def _plain_document(data: bytes) -> Document | None:
    try:
        return parse_document(data)
    except ManifestError:
        return None


def _same_document(plain: Document, model: DeploymentDocument) -> bool:
    return (
        (plain.device_id, plain.sequence, plain.issued_at, plain.expires, list(plain.deployments))
        == (model.device_id, model.sequence, model.issued_at, model.expires, model.deployments)
        and list(plain.modules) == list(model.modules)
        and all(
            (p.blobs.bundle, p.blobs.image, p.settings.port, p.settings.restart_policy, dict(p.settings.env),
             dict(p.module))
            == (m.blobs.bundle, m.blobs.image, m.settings.port, m.settings.restart_policy, m.settings.env, m.module)
            for p, m in zip(plain.modules.values(), model.modules.values(), strict=True)
        )
    )


# Where the agent's rules are deliberately stricter than the model on its own; from_bytes runs them first,
# so the hub refuses these too (checked below).
# Pydantic alone also reads times as "HH:MM" without seconds, a string of digits as a Unix time, a lowercase
# 't', more than 6 fraction digits, a decimal comma and "+0000"; the agent reads the hub's format (format_time)
# with a fraction, a space, 'z' or a zero offset, and no more.
STRICTER = {"duplicate key", "NaN", "alias and name", "lone surrogate"} | {
    f"issuedAt={when}" for when in ("2026-01-01T00:00Z", "1767225600", "2026-01-01t00:00:00Z",
                                    "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00,5Z",
                                    "2026-01-01T00:00:00+0000")
}  # fmt: skip


@pytest.mark.parametrize("name,data", _corpus(DOCUMENT, _document_edits()))
def test_a_document_is_accepted_or_refused_alike_by_the_agent_and_the_hub(name: str, data: bytes) -> None:
    plain, model = _plain_document(data), _pydantic_document(data)
    if name in STRICTER:
        assert plain is None
    else:
        assert (plain is None) == (model is None), f"agent {'refuses' if plain is None else 'accepts'}"
    if plain is not None and model is not None:
        assert _same_document(plain, model)
    hub_accepts = True
    try:
        DeploymentDocument.from_bytes(data)
    except ManifestError:
        hub_accepts = False
    assert hub_accepts == (plain is not None)


def _pydantic_manifest(data: bytes) -> ModuleManifest | None:
    from pydantic import ValidationError

    try:
        return ModuleManifest.model_validate_json(data)
    except ValidationError:
        return None


@pytest.mark.parametrize("name,data", _corpus(MANIFEST, _manifest_edits()))
def test_a_manifest_is_accepted_or_refused_alike_by_the_agent_and_the_packager(name: str, data: bytes) -> None:
    try:
        plain = parse_manifest(data)
    except ManifestError:
        plain = None
    model = _pydantic_manifest(data)
    if plain is None and model is not None:
        # The model alone is lax (it would take "3" for 3); its from_bytes runs the agent's rules first.
        with pytest.raises(ManifestError):
            ModuleManifest.from_bytes(data)
        return
    assert (plain is None) == (model is None), f"agent {'refuses' if plain is None else 'accepts'}"
    if plain is not None and model is not None:
        assert parse_manifest(model.to_bytes()) == plain  # the same values, read back from the model's bytes
        assert ModuleManifest.from_bytes(data) == model


def test_the_corpus_holds_both_verdicts() -> None:
    verdicts = [_plain_document(data) is None for _name, data in _corpus(DOCUMENT, _document_edits())]
    assert verdicts.count(False) >= 15 and verdicts.count(True) >= 150


# schemaVersion 2 (ADR 0028): the same agreement for manifests with parts
PART = {"digest": DIGEST, "size": 4}
MANIFEST_V2: dict[str, Any] = {
    **MANIFEST,
    "schemaVersion": 2,
    "parts": {
        "chunkSize": 65536,
        "source": PART,
        "wheels": [{"name": "numpy-2.0-cp311-none-any.whl", "digest": DIGEST, "size": 9}],
        "models": [{"path": "azureml-models/digits/1/model.onnx", "digest": DIGEST, "size": 65540,
                    "chunks": [{"digest": DIGEST, "size": 65536}, PART]}],
        "image": {"config": PART, "layers": [PART, {"digest": DIGEST, "size": 0}]},
    },
}


def _manifest_v2_edits() -> Iterator[tuple[str, Edit]]:
    yield "valid", lambda d: None
    yield "no parts", _drop("parts")
    yield "parts on version 1", _set("schemaVersion", 1)
    yield "no image", _drop("image")
    yield "no parts image (defaulted)", _drop("parts/image")
    yield "chunkSize too small", _set("parts/chunkSize", 1024)
    yield "chunkSize text", _set("parts/chunkSize", "65536")
    yield "chunks do not add up", _set("parts/models/0/size", 65541)
    yield "short middle chunk", _set("parts/models/0/chunks/0/size", 65535)
    yield "empty last chunk", lambda d: d["parts"]["models"][0]["chunks"].append({"digest": DIGEST, "size": 0})
    yield "no chunks for a non-empty file", _set("parts/models/0/chunks", [])
    yield "wheel in a folder", _set("parts/wheels/0/name", "x/numpy.whl")
    yield "wheel not a wheel", _set("parts/wheels/0/name", "numpy.tar.gz")
    yield "wheel twice", lambda d: d["parts"]["wheels"].append(dict(d["parts"]["wheels"][0]))
    yield "model outside azureml-models", _set("parts/models/0/path", "src/model.onnx")
    yield "model path with ..", _set("parts/models/0/path", "azureml-models/digits/../x/model.onnx")
    yield "model twice", lambda d: d["parts"]["models"].append(copy.deepcopy(d["parts"]["models"][0]))
    yield "part digest upper", _set("parts/source/digest", DIGEST.upper().replace("SHA256", "sha256"))
    yield "part size negative", _set("parts/source/size", -1)
    yield "unknown part key", _set("parts/source/url", "http://x")
    yield "unknown parts key", _set("parts/bundle", PART)
    yield "schemaVersion 3", _set("schemaVersion", 3)


@pytest.mark.parametrize("name,data", _corpus(MANIFEST_V2, _manifest_v2_edits()))
def test_a_v2_manifest_is_accepted_or_refused_alike_by_the_agent_and_the_packager(name: str, data: bytes) -> None:
    test_a_manifest_is_accepted_or_refused_alike_by_the_agent_and_the_packager(name, data)


def test_the_v2_corpus_holds_both_verdicts() -> None:
    verdicts = {name: _pydantic_manifest(data) is None for name, data in _corpus(MANIFEST_V2, _manifest_v2_edits())}
    assert not verdicts["valid"] and not verdicts["no parts image (defaulted)"]
    assert sum(verdicts.values()) >= 18
