"""Accepting deployment documents: one short test per attack, repository-simulator style.

``Hub`` below plays the hub and the packager from memory: it holds release and hub
keys, signs module manifests and per-device documents, and lets a test tamper
with any step. Each test is one attack and the status code it must produce.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from edgeship.agent.decide.accept import (
    MAX_SEQUENCE_JUMP,
    STATUS_CODES,
    ExpiredDocumentError,
    ReplayError,
    SequenceJumpError,
    WrongDeviceError,
    accept_document,
    replay_floor,
    status_code_for,
)
from edgeship.deployment import (
    MAX_DOCUMENT_BYTES,
    MAX_SEQUENCE,
    DeploymentDocument,
    DocumentTooLargeError,
    ModuleBlobs,
    ModuleEntry,
    SchemaVersionError,
    build_document,
    sign_document,
)
from edgeship.errors import (
    BadSignatureError,
    EnvelopeError,
    ManifestError,
    PayloadTypeError,
    ThresholdError,
    UnknownKeyError,
)
from edgeship.modules.manifest import BundleRef, EnvironmentRef, ModelPin, ModuleManifest
from edgeship.modules.plain import parse_manifest
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, MODULE_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
DIGEST = "sha256:" + "ab" * 32


def manifest(name: str = "digits", version: int = 1) -> ModuleManifest:
    return ModuleManifest(
        name=name,
        version=version,
        models=[ModelPin(name="digits", version=1, digest=DIGEST)],
        environment=EnvironmentRef(lockDigest=DIGEST, python="3.11"),
        bundle=BundleRef(digest=DIGEST, size=10),
        files=[],
    )


@dataclass
class Hub:
    """Keys and signing for one device's documents, like python-tuf's RepositorySimulator."""

    release: list[Signer] = field(default_factory=lambda: [Signer.generate()])
    hub: list[Signer] = field(default_factory=lambda: [Signer.generate()])
    hub_threshold: int = 1

    @property
    def trust_root(self) -> TrustRoot:
        return TrustRoot.build(
            root=[Signer.generate().public_key],
            release=[s.public_key for s in self.release],
            hub=[s.public_key for s in self.hub],
            hub_threshold=self.hub_threshold,
        )

    def module(self, man: ModuleManifest, signers: list[Signer] | None = None) -> ModuleEntry:
        env = sign_envelope(man.to_bytes(), MODULE_PAYLOAD_TYPE, signers or self.release)
        return ModuleEntry(module=env.to_dict(), blobs=ModuleBlobs(bundle="/blobs/" + DIGEST))

    def document(self, sequence: int = 5, device_id: str = "dev-1", **kwargs: object) -> DeploymentDocument:
        modules = kwargs.pop("modules", {"digits": self.module(manifest())})
        issued = kwargs.pop("issued_at", NOW - timedelta(hours=1))
        return build_document(
            device_id=device_id, sequence=sequence, modules=modules, issued_at=issued, **kwargs  # type: ignore[arg-type]
        )

    def sign(self, document: DeploymentDocument, signers: list[Signer] | None = None) -> bytes:
        return sign_document(document, signers or self.hub).to_json().encode()

    def sign_raw(self, body: dict[str, object]) -> bytes:
        """Sign any JSON with the hub key, as a stolen hub key (or a hostile hub) could."""
        return sign_envelope(json.dumps(body).encode(), DEPLOYMENT_PAYLOAD_TYPE, self.hub).to_json().encode()

    def with_settings(self, **settings: object) -> bytes:
        body = json.loads(self.document().to_bytes())
        body["modules"]["digits"]["settings"].update(settings)
        return self.sign_raw(body)


@pytest.fixture(scope="module")
def hub() -> Hub:
    return Hub()


def _accept(hub: Hub, raw: bytes, last: int | None = 4, now: datetime = NOW, root: TrustRoot | None = None) -> object:
    return accept_document(raw, root or hub.trust_root, "dev-1", last, now)


def _refused(hub: Hub, raw: bytes, error: type[Exception], code: int, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        _accept(hub, raw, **kwargs)  # type: ignore[arg-type]
    assert status_code_for(info.value) == code
    return str(info.value)


def test_a_fresh_document_signed_by_the_hub_is_accepted(hub: Hub) -> None:
    accepted = accept_document(hub.sign(hub.document()), hub.trust_root, "dev-1", 4, NOW)
    assert accepted.sequence == 5
    assert accepted.manifests["digits"] == parse_manifest(manifest().to_bytes())
    assert accepted.manifest_bytes["digits"] == manifest().to_bytes()
    assert status_code_for(None) == 200


def test_first_document_on_a_new_device_is_accepted(hub: Hub) -> None:
    assert accept_document(hub.sign(hub.document(sequence=1)), hub.trust_root, "dev-1", None, NOW).sequence == 1


def test_replay_of_the_last_applied_sequence(hub: Hub) -> None:
    assert "not above the last applied 5" in _refused(hub, hub.sign(hub.document(5)), ReplayError, 409, last=5)


def test_rollback_to_an_older_sequence(hub: Hub) -> None:
    _refused(hub, hub.sign(hub.document(3)), ReplayError, 409, last=5)


def test_expired_document(hub: Hub) -> None:
    doc = hub.document(issued_at=NOW - timedelta(days=8))
    assert "expired at 2025-05-31T12:00:00Z" in _refused(hub, hub.sign(doc), ExpiredDocumentError, 410)


def test_expired_exactly_at_expiry(hub: Hub) -> None:
    doc = hub.document(issued_at=NOW - timedelta(days=1), ttl=timedelta(days=1))
    _refused(hub, hub.sign(doc), ExpiredDocumentError, 410)


def test_replayed_and_expired_is_reported_as_replay(hub: Hub) -> None:
    _refused(hub, hub.sign(hub.document(2, issued_at=NOW - timedelta(days=30))), ReplayError, 409, last=4)


def test_unknown_hub_key(hub: Hub) -> None:
    _refused(hub, hub.sign(hub.document(), [Signer.generate()]), UnknownKeyError, 401)


def test_release_key_cannot_sign_a_deployment(hub: Hub) -> None:
    _refused(hub, hub.sign(hub.document(), hub.release), UnknownKeyError, 401)


def test_below_the_hub_threshold() -> None:
    two = Hub(hub=[Signer.generate(), Signer.generate()], hub_threshold=2)
    _refused(two, two.sign(two.document(), two.hub[:1]), ThresholdError, 401)
    assert accept_document(two.sign(two.document()), two.trust_root, "dev-1", 4, NOW).sequence == 5


def test_tampered_payload(hub: Hub) -> None:
    envelope = json.loads(hub.sign(hub.document(5)))
    forged = hub.document(99).to_bytes()
    envelope["payload"] = base64.b64encode(forged).decode()
    _refused(hub, json.dumps(envelope).encode(), BadSignatureError, 401)


def test_unsigned_document(hub: Hub) -> None:
    envelope = json.loads(hub.sign(hub.document()))
    envelope["signatures"] = []
    _refused(hub, json.dumps(envelope).encode(), ThresholdError, 401)


def test_document_for_another_device(hub: Hub) -> None:
    assert "for device 'dev-2'" in _refused(hub, hub.sign(hub.document(device_id="dev-2")), WrongDeviceError, 400)


def test_oversize_document_is_refused_before_parsing(hub: Hub) -> None:
    raw = b"{" + b" " * MAX_DOCUMENT_BYTES + b"}"
    _refused(hub, raw, DocumentTooLargeError, 400)


def test_not_an_envelope(hub: Hub) -> None:
    _refused(hub, b"\xff not json", EnvelopeError, 400)
    _refused(hub, b'{"payloadType": 3}', EnvelopeError, 400)


def test_a_module_manifest_envelope_is_not_a_deployment(hub: Hub) -> None:
    raw = sign_envelope(hub.document().to_bytes(), MODULE_PAYLOAD_TYPE, hub.hub).to_json().encode()
    _refused(hub, raw, PayloadTypeError, 400)


def test_unsupported_schema_version(hub: Hub) -> None:
    body = json.loads(hub.document().to_bytes())
    body["schemaVersion"] = 2
    raw = sign_envelope(json.dumps(body).encode(), DEPLOYMENT_PAYLOAD_TYPE, hub.hub).to_json().encode()
    assert "upgrade the agent" in _refused(hub, raw, SchemaVersionError, 412)


def test_signed_but_malformed_document(hub: Hub) -> None:
    body = json.loads(hub.document().to_bytes())
    body["sequence"] = "6"
    raw = sign_envelope(json.dumps(body).encode(), DEPLOYMENT_PAYLOAD_TYPE, hub.hub).to_json().encode()
    assert "sequence" in _refused(hub, raw, ManifestError, 400)


def test_module_manifest_signed_by_the_hub_key_instead_of_release(hub: Hub) -> None:
    doc = hub.document(modules={"digits": hub.module(manifest(), signers=hub.hub)})
    assert "Module 'digits'" in _refused(hub, hub.sign(doc), UnknownKeyError, 401)


def test_module_manifest_tampered_after_release_signing(hub: Hub) -> None:
    entry = hub.module(manifest())
    envelope = dict(entry.module)
    envelope["payload"] = base64.b64encode(manifest(version=2).to_bytes()).decode()
    doc = hub.document(modules={"digits": ModuleEntry(module=envelope, blobs=entry.blobs)})
    _refused(hub, hub.sign(doc), BadSignatureError, 401)


def test_module_entry_name_differs_from_its_signed_manifest(hub: Hub) -> None:
    doc = hub.document(modules={"digits": hub.module(manifest(name="other"))})
    _refused(hub, hub.sign(doc), ManifestError, 400)


def test_every_code_has_a_documented_meaning() -> None:
    assert sorted(STATUS_CODES) == [200, 202, 400, 401, 409, 410, 412, 500]
    assert status_code_for(RuntimeError("boom")) == 500


def test_document_bytes_are_canonical(hub: Hub) -> None:
    doc = hub.document()
    assert DeploymentDocument.from_bytes(doc.to_bytes()) == doc
    assert DeploymentDocument.from_bytes(doc.to_bytes()).to_bytes() == doc.to_bytes()


# -- the trust split: a hub key chooses among release-signed modules, nothing more ----------


@pytest.mark.parametrize(
    "env",
    [{"LD_PRELOAD": "/tmp/evil.so"}, {"PYTHONPATH": "/tmp/evil"}, {"PYTHONWARNINGS": "x", "BROWSER": "sh -c id"}],
)
def test_hub_signed_environment_variables_are_refused(hub: Hub, env: dict[str, str]) -> None:
    message = _refused(hub, hub.with_settings(env=env), ManifestError, 400)
    assert "settings.env" in message and "release-signed" in message


def test_the_empty_env_of_documents_from_older_hubs_is_accepted(hub: Hub) -> None:
    raw = hub.with_settings(env={}, port=5001, restartPolicy="always")
    settings = accept_document(raw, hub.trust_root, "dev-1", 4, NOW).document.modules["digits"].settings
    assert settings.port == 5001 and settings.restart_policy == "always" and settings.env == {}


@pytest.mark.parametrize(
    "key, value",
    [
        ("command", ["sh", "-c", "id"]),
        ("args", ["--evil"]),
        ("entrypoint", "/bin/sh"),
        ("createOptions", {"HostConfig": {"Privileged": True, "Binds": ["/:/host"]}}),
        ("privileged", True),
        ("binds", ["/:/host"]),
        ("capAdd", ["SYS_ADMIN"]),
        ("devices", ["/dev/mem"]),
        ("networkMode", "host"),
        ("user", "root"),
    ],
)
def test_hub_signed_command_and_container_options_are_refused(hub: Hub, key: str, value: object) -> None:
    assert key in _refused(hub, hub.with_settings(**{key: value}), ManifestError, 400)


def test_a_sequence_past_the_highest_is_refused(hub: Hub) -> None:
    body = json.loads(hub.document().to_bytes())
    body["sequence"] = 2**62
    assert "sequence" in _refused(hub, hub.sign_raw(body), ManifestError, 400, last=None)
    body["sequence"] = MAX_SEQUENCE
    _refused(hub, hub.sign_raw(body), SequenceJumpError, 409, last=None)


def test_a_sequence_jump_that_would_lock_the_device_out_is_refused(hub: Hub) -> None:
    message = _refused(hub, hub.sign(hub.document(5 + MAX_SEQUENCE_JUMP + 1)), SequenceJumpError, 409, last=5)
    assert "rotate the hub key" in message
    _refused(hub, hub.sign(hub.document(MAX_SEQUENCE_JUMP + 1)), SequenceJumpError, 409, last=None)


def test_a_jump_up_to_the_bound_is_accepted(hub: Hub) -> None:
    assert _accept(hub, hub.sign(hub.document(5 + MAX_SEQUENCE_JUMP)), last=5)
    assert _accept(hub, hub.sign(hub.document(MAX_SEQUENCE_JUMP)), last=None)


def test_rotating_the_hub_key_voids_a_floor_a_stolen_key_pushed_up(hub: Hub) -> None:
    stolen_keys = tuple(s.public_key.keyid for s in hub.hub)
    replaced = Hub(release=hub.release)  # the same release keys, a new hub key
    floor = replay_floor(MAX_SEQUENCE, stolen_keys, replaced.trust_root)
    assert floor is None
    raw = replaced.sign(replaced.document(6))
    assert accept_document(raw, replaced.trust_root, "dev-1", floor, NOW).sequence == 6
    # documents the stolen key signed no longer verify, so nothing can be replayed under the void floor
    _refused(hub, hub.sign(hub.document(7)), UnknownKeyError, 401, last=floor, root=replaced.trust_root)


def test_the_floor_stands_while_a_hub_key_that_signed_it_is_trusted(hub: Hub) -> None:
    keys = tuple(s.public_key.keyid for s in hub.hub)
    both = Hub(release=hub.release, hub=[*hub.hub, Signer.generate()])
    assert replay_floor(9, keys, both.trust_root) == 9
    assert replay_floor(9, None, both.trust_root) == 9  # state written before floors had keys
    assert replay_floor(None, keys, both.trust_root) is None
