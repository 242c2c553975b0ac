"""Trust-root rotation on the device, without MQTT: ``edgeship.agent.trust``.

Each attack is one short named test, as python-tuf's repository simulator tests
are: a root signed by a stranger, a threshold not met, a skipped version, a
rollback, a malformed message; and the keeper's persistence across a restart.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgeship.agent.trust import TrustRootKeeper, apply_chain, parse_chain
from edgeship.errors import PayloadTypeError, SignatureError, TrustRootError, UnknownKeyError
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, Signer, TrustRoot, sign_envelope, verify_envelope
from edgeship.signing.trust import sign_trust_root

NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)


class Keys:
    def __init__(self) -> None:
        self.root = Signer.generate(name="root")
        self.root2 = Signer.generate(name="root-2")
        self.release = Signer.generate(name="release")
        self.hub = Signer.generate(name="hub")
        self.hub2 = Signer.generate(name="hub-2")

    def root_doc(self, version: int, *, hub: Signer | None = None, roots: list[Signer] | None = None,
                 root_threshold: int = 1) -> TrustRoot:
        return TrustRoot.build(
            root=[s.public_key for s in (roots or [self.root])], release=[self.release.public_key],
            hub=[(hub or self.hub).public_key], root_threshold=root_threshold, version=version,
        )


def _envelope(root: TrustRoot, signers: list[Signer]) -> dict[str, object]:
    return dict(json.loads(sign_trust_root(root, signers).to_json()))


def _chain(*envelopes: dict[str, object]) -> bytes:
    return json.dumps({"chain": list(envelopes)}).encode()


@pytest.fixture
def keys() -> Keys:
    return Keys()


def test_a_root_signed_by_the_current_root_key_rotates_and_retires_the_old_hub_key(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    out = apply_chain(v1, _chain(_envelope(keys.root_doc(2, hub=keys.hub2), [keys.root])), NOW)
    assert out.error is None and out.root.version == 2 and len(out.accepted) == 1
    document = sign_envelope(b"{}", DEPLOYMENT_PAYLOAD_TYPE, [keys.hub])
    with pytest.raises(UnknownKeyError):
        verify_envelope(document, out.root, "hub", DEPLOYMENT_PAYLOAD_TYPE, now=NOW)
    new = sign_envelope(b"{}", DEPLOYMENT_PAYLOAD_TYPE, [keys.hub2])
    assert verify_envelope(new, out.root, "hub", DEPLOYMENT_PAYLOAD_TYPE, now=NOW) == b"{}"


def test_a_root_signed_by_a_stranger_is_refused_and_the_current_root_stays(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    stranger = Signer.generate(name="stranger")
    v2 = keys.root_doc(2, roots=[stranger], hub=keys.hub2)
    out = apply_chain(v1, _chain(_envelope(v2, [stranger])), NOW)
    assert out.root is v1 and not out.rotated
    assert isinstance(out.error, SignatureError) and "not signed by the current root keys" in str(out.error)


def test_a_raised_root_threshold_needs_both_signatures_for_the_next_rotation(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    v2 = keys.root_doc(2, roots=[keys.root, keys.root2], root_threshold=2)
    out = apply_chain(v1, _chain(_envelope(v2, [keys.root, keys.root2])), NOW)
    assert out.error is None and out.root.role("root").threshold == 2
    v3 = keys.root_doc(3, roots=[keys.root, keys.root2], root_threshold=2, hub=keys.hub2)
    one = apply_chain(out.root, _chain(_envelope(v3, [keys.root])), NOW)
    assert one.root.version == 2 and "1 of 1 valid signatures, threshold 2" in str(one.error)
    both = apply_chain(out.root, _chain(_envelope(v3, [keys.root, keys.root2])), NOW)
    assert both.error is None and both.root.version == 3


def test_a_version_jump_is_refused_but_the_whole_chain_is_accepted(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    e2 = _envelope(keys.root_doc(2, hub=keys.hub2), [keys.root])
    e3 = _envelope(keys.root_doc(3), [keys.root])
    jump = apply_chain(v1, _chain(e3), NOW)
    assert jump.root is v1 and isinstance(jump.error, TrustRootError)
    assert "cannot follow version 1" in str(jump.error)
    out = apply_chain(v1, _chain(e2, e3), NOW)
    assert out.error is None and out.root.version == 3 and len(out.accepted) == 2


def test_the_same_chain_again_is_a_no_op_and_an_older_root_is_skipped(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    message = _chain(_envelope(keys.root_doc(2), [keys.root]))
    v2 = apply_chain(v1, message, NOW).root
    again = apply_chain(v2, message, NOW)
    assert again.root is v2 and not again.rotated and again.error is None


def test_the_chain_stops_at_the_first_refusal_and_keeps_what_it_accepted(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    e2 = _envelope(keys.root_doc(2), [keys.root])
    stranger = Signer.generate(name="stranger")
    e3 = _envelope(keys.root_doc(3, roots=[stranger]), [stranger])
    out = apply_chain(v1, _chain(e2, e3), NOW)
    assert out.root.version == 2 and len(out.accepted) == 1 and out.error is not None


def test_an_expired_new_root_is_refused(keys: Keys) -> None:
    v1 = keys.root_doc(1)
    old = TrustRoot.build(root=[keys.root.public_key], release=[keys.release.public_key], hub=[keys.hub.public_key],
                          version=2, expires=NOW - timedelta(days=1))
    out = apply_chain(v1, _chain(_envelope(old, [keys.root])), NOW)
    assert out.root is v1 and "already expired" in str(out.error)


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"not json", "not JSON"),
        (b"[]", "must be"),
        (b'{"chain": []}', "1 to"),
        (b'{"chain": [1]}', "not a DSSE envelope"),
        (b'{"chain": [], "extra": 1}', "must be"),
        (b"x" * (1024 * 1024 + 1), "over the"),
    ],
)
def test_a_malformed_message_is_refused_with_a_reason(keys: Keys, payload: bytes, words: str) -> None:
    out = apply_chain(keys.root_doc(1), payload, NOW)
    assert not out.rotated and isinstance(out.error, TrustRootError) and words in str(out.error)


def test_a_deployment_envelope_is_not_a_trust_root(keys: Keys) -> None:
    document = json.loads(sign_envelope(b"{}", DEPLOYMENT_PAYLOAD_TYPE, [keys.root]).to_json())
    out = apply_chain(keys.root_doc(1), json.dumps(document).encode(), NOW)
    assert not out.rotated and isinstance(out.error, PayloadTypeError) and "not a trust root" in str(out.error)


def test_a_bare_envelope_is_a_chain_of_one(keys: Keys) -> None:
    envelope = _envelope(keys.root_doc(2), [keys.root])
    assert len(parse_chain(json.dumps(envelope).encode())) == 1


def _provisioned(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "trust-root.json"
    path.write_text(sign_trust_root(keys.root_doc(1), [keys.root]).to_json())
    return path


def test_the_keeper_writes_the_rotated_root_and_prefers_it_after_a_restart(tmp_path: Path, keys: Keys) -> None:
    provisioned = _provisioned(tmp_path, keys)
    keeper = TrustRootKeeper(provisioned, tmp_path / "state")
    assert keeper.root.version == 1
    assert keeper.offer(_chain(_envelope(keys.root_doc(2, hub=keys.hub2), [keys.root])), NOW)
    assert keeper.root.version == 2 and keeper.last_error is None
    assert (tmp_path / "state" / "trust-root.json").stat().st_mode & 0o777 == 0o600
    restarted = TrustRootKeeper(provisioned, tmp_path / "state")
    assert restarted.root.version == 2 and restarted.root.role("hub").keyids == (keys.hub2.keyid,)


def test_the_keeper_reports_a_refusal_once_and_keeps_its_root(tmp_path: Path, keys: Keys) -> None:
    keeper = TrustRootKeeper(_provisioned(tmp_path, keys), tmp_path / "state")
    stranger = Signer.generate(name="stranger")
    bad = _chain(_envelope(keys.root_doc(2, roots=[stranger]), [stranger]))
    assert keeper.offer(bad, NOW)
    assert keeper.root.version == 1 and "current root keys" in (keeper.last_error or "")
    assert not keeper.offer(bad, NOW)  # nothing changed: no new report
    assert not keeper.offer(b"", NOW)  # a cleared retained message
    assert not (tmp_path / "state" / "trust-root.json").exists()


def test_a_newer_provisioned_root_wins_over_an_older_rotated_one(tmp_path: Path, keys: Keys) -> None:
    provisioned = _provisioned(tmp_path, keys)
    keeper = TrustRootKeeper(provisioned, tmp_path / "state")
    keeper.offer(_chain(_envelope(keys.root_doc(2), [keys.root])), NOW)
    provisioned.write_text(sign_trust_root(keys.root_doc(3, hub=keys.hub2), [keys.root]).to_json())
    assert TrustRootKeeper(provisioned, tmp_path / "state").root.version == 3


def test_a_corrupt_rotated_root_falls_back_to_the_provisioned_one(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "trust-root.json").write_text("{broken")
    assert TrustRootKeeper(_provisioned(tmp_path, keys), tmp_path / "state").root.version == 1


def test_a_rotation_that_cannot_be_saved_is_not_used(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeship.agent.trust as trust

    keeper = TrustRootKeeper(_provisioned(tmp_path, keys), tmp_path / "state")

    def full_disk(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trust, "atomic_write_bytes", full_disk)
    assert keeper.offer(_chain(_envelope(keys.root_doc(2, hub=keys.hub2), [keys.root])), NOW)
    assert keeper.root.version == 1 and "could not be saved" in (keeper.last_error or "")
