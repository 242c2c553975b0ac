"""Attacks on a signed module directory: each is refused by verify with its own clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from signed_modules import ModuleWorld

from edgeship.errors import (
    BadSignatureError,
    EnvelopeError,
    ManifestError,
    PayloadTypeError,
    ThresholdError,
    UnknownKeyError,
)
from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE
from edgeship.modules.plain import parse_manifest
from edgeship.modules.verify import ArtifactDigestError, UnlistedFileError, verify_module_dir
from edgeship.signing import Envelope, Signer, sign_envelope


def _flip(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def world() -> ModuleWorld:
    return ModuleWorld()


def test_untouched_module_verifies(world: ModuleWorld, tmp_path: Path) -> None:
    manifest = world.write_module(tmp_path / "m")
    verified = verify_module_dir(tmp_path / "m", world.trust_root())
    assert verified.manifest == parse_manifest(manifest.to_bytes())
    assert verified.artifact("bundle.tar").is_file()


def test_flipped_byte_in_bundle_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    _flip(tmp_path / "m" / "bundle.tar")
    with pytest.raises(ArtifactDigestError, match=r"Artifact bundle.tar does not match the signed manifest"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_flipped_byte_in_image_archive_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    _flip(tmp_path / "m" / "image.tar", offset=500)
    with pytest.raises(ArtifactDigestError, match=r"Artifact image.tar does not match"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_flipped_byte_in_target_artifact_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    _flip(tmp_path / "m" / "targets" / "aks.yaml", offset=2)
    with pytest.raises(ArtifactDigestError, match=r"targets/aks.yaml"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_edited_manifest_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    manifest = tmp_path / "m" / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(ManifestError, match="edited after signing"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_flipped_byte_in_signed_payload_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    envelope = Envelope.from_json((tmp_path / "m" / ENVELOPE_FILE).read_text())
    tampered = bytearray(envelope.payload)
    tampered[5] ^= 0x01
    forged = Envelope(envelope.payload_type, bytes(tampered), envelope.signatures)
    (tmp_path / "m" / ENVELOPE_FILE).write_text(forged.to_json())
    (tmp_path / "m" / MANIFEST_FILE).write_bytes(bytes(tampered))
    with pytest.raises(BadSignatureError, match="does not verify"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_signature_by_unknown_key_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m", signers=[Signer.generate(name="intruder")])
    with pytest.raises(UnknownKeyError, match="no signature is by a trusted release key"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_signature_by_hub_key_does_not_count_for_release(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m", signers=[world.hub_key])
    with pytest.raises(UnknownKeyError):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_fewer_signatures_than_threshold_is_refused(tmp_path: Path) -> None:
    world = ModuleWorld(release=[Signer.generate(name="r1"), Signer.generate(name="r2")], threshold=2)
    world.write_module(tmp_path / "m", signers=[world.release[0]])
    with pytest.raises(ThresholdError, match=r"1 of 1 valid signatures, threshold 2"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_threshold_met_by_two_distinct_keys(tmp_path: Path) -> None:
    world = ModuleWorld(release=[Signer.generate(name="r1"), Signer.generate(name="r2")], threshold=2)
    world.write_module(tmp_path / "m")
    assert verify_module_dir(tmp_path / "m", world.trust_root()).manifest.name == "digits"


def test_file_omitted_from_digest_list_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m", omit_from_list="targets/aks.yaml")
    with pytest.raises(UnlistedFileError, match=r"targets/aks.yaml .* is not covered by the signed manifest"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_extra_file_dropped_into_module_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    (tmp_path / "m" / "evil.sh").write_text("#!/bin/sh\n")
    with pytest.raises(UnlistedFileError, match=r"evil.sh"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_missing_artifact_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    (tmp_path / "m" / "image.tar").unlink()
    with pytest.raises(ArtifactDigestError, match=r"image.tar listed in the manifest is missing"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_missing_envelope_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    (tmp_path / "m" / ENVELOPE_FILE).unlink()
    with pytest.raises(ManifestError, match=r"signature envelope module.dsse.json is missing"):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_envelope_of_another_document_type_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    payload = (tmp_path / "m" / MANIFEST_FILE).read_bytes()
    other = sign_envelope(payload, "application/vnd.edgeship.deployment+json", world.release)
    (tmp_path / "m" / ENVELOPE_FILE).write_text(other.to_json())
    with pytest.raises(PayloadTypeError):
        verify_module_dir(tmp_path / "m", world.trust_root())


def test_garbage_envelope_is_refused(world: ModuleWorld, tmp_path: Path) -> None:
    world.write_module(tmp_path / "m")
    (tmp_path / "m" / ENVELOPE_FILE).write_text("{not json")
    with pytest.raises(EnvelopeError):
        verify_module_dir(tmp_path / "m", world.trust_root())
