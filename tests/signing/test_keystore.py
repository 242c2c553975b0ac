"""The workspace key store: file modes, no overwrite, loading, and never leaking a private key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edgeship.errors import InputError, SigningKeyError
from edgeship.signing import (
    MODULE_PAYLOAD_TYPE,
    Keyring,
    TrustRoot,
    load_signer,
    sign_envelope,
    verify_envelope,
)
from edgeship.workspace import Workspace


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_private_0600_public_and_sidecar(workspace: Workspace) -> None:
    info = Keyring(workspace).create("release")
    keys = workspace.keys_dir
    assert info.name == "release"
    assert _mode(keys / "release.key") == 0o600
    assert _mode(keys) == 0o700
    assert (keys / "release.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (keys / "release.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    sidecar = json.loads((keys / "release.json").read_text())
    assert sidecar == {
        "name": "release",
        "role": "release",
        "keyid": info.keyid,
        "keytype": "ed25519",
        "created": info.created,
    }
    assert sorted(p.name for p in keys.iterdir()) == ["release.json", "release.key", "release.pub"]


def test_keyid_is_sha256_of_the_raw_public_key(workspace: Workspace) -> None:
    import hashlib

    info = Keyring(workspace).create("hub")
    assert info.keyid == hashlib.sha256(info.public_key.raw).hexdigest()


def test_existing_name_is_refused_and_nothing_is_overwritten(workspace: Workspace) -> None:
    ring = Keyring(workspace)
    ring.create("release", "ci")
    before = {p.name: p.read_bytes() for p in workspace.keys_dir.iterdir()}
    with pytest.raises(SigningKeyError, match=r"already exists.*nothing was changed"):
        ring.create("hub", "ci")
    assert {p.name: p.read_bytes() for p in workspace.keys_dir.iterdir()} == before


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a/b", "", "x" * 65])
def test_unsafe_key_names_are_refused(workspace: Workspace, name: str) -> None:
    with pytest.raises(InputError, match="Invalid key name"):
        Keyring(workspace).create("release", name)


def test_unknown_role_is_refused(workspace: Workspace) -> None:
    with pytest.raises(InputError, match="choose one of root, release, hub"):
        Keyring(workspace).create("admin")


def test_list_is_sorted_and_filters_by_role(workspace: Workspace) -> None:
    ring = Keyring(workspace)
    ring.create("release", "b")
    ring.create("release", "a")
    ring.create("hub")
    assert [i.name for i in ring.list()] == ["a", "b", "hub"]
    assert [i.name for i in ring.list("hub")] == ["hub"]


def test_loaded_signer_signs_what_its_public_key_verifies(workspace: Workspace) -> None:
    ring = Keyring(workspace)
    release = ring.create("release")
    others = [ring.create(role).public_key for role in ("root", "hub")]
    root = TrustRoot.build(root=others[:1], release=[release.public_key], hub=others[1:])
    signer = load_signer(workspace, "release")
    envelope = sign_envelope(b"{}", MODULE_PAYLOAD_TYPE, [signer])
    assert verify_envelope(envelope.to_json(), root, "release", MODULE_PAYLOAD_TYPE) == b"{}"


def test_signer_repr_never_shows_the_private_key(workspace: Workspace) -> None:
    Keyring(workspace).create("release")
    signer = load_signer(workspace, "release")
    pem_body = (workspace.keys_dir / "release.key").read_text().splitlines()[1]
    assert pem_body not in repr(signer) and pem_body not in str(signer)
    assert "release" in repr(signer)


def test_missing_key_says_how_to_create_it(workspace: Workspace) -> None:
    with pytest.raises(SigningKeyError, match=r"No key named .nope.*edgeship keys create"):
        load_signer(workspace, "nope")


def test_public_half_swapped_on_disk_is_detected(workspace: Workspace) -> None:
    ring = Keyring(workspace)
    ring.create("release", "a")
    ring.create("release", "b")
    (workspace.keys_dir / "a.pub").write_bytes((workspace.keys_dir / "b.pub").read_bytes())
    with pytest.raises(SigningKeyError, match="does not match"):
        ring.signer("a")
