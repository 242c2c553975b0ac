"""Trust roots and the rules that turn a DSSE envelope into trusted bytes.

Like python-tuf's ``trusted_metadata_set``, this module holds only decisions: no
file or network I/O, and the clock is a parameter. The agent, the packager's
``module verify`` and the CLI load bytes themselves and call in here.

Trust root document (payload type :data:`TRUST_ROOT_PAYLOAD_TYPE`)::

    {"schemaVersion": 1, "version": 3, "expires": "2027-01-01T00:00:00Z",   # expires optional
     "keys":  {"<keyid>": {"keytype": "ed25519", "public": "<base64 raw | PEM>"}},
     "roles": {"root":    {"keyids": ["<keyid>", ...], "threshold": 1},
               "release": {...}, "hub": {...}}}

Invariants checked on every parse: each key id equals sha256 of its key (so one key
cannot be counted twice under two ids), the three roles are present and no others,
every role key id is in ``keys``, and ``1 <= threshold <= len(keyids)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from edgeship.errors import (
    BadSignatureError,
    EdgeshipError,
    PayloadTypeError,
    SignatureError,
    ThresholdError,
    TrustRootError,
    UnknownKeyError,
)
from edgeship.records import field, record
from edgeship.signing.dsse import Envelope, SignerLike, sign_envelope
from edgeship.signing.ed25519 import KEYTYPE, PublicKey

__all__ = [
    "ROLES",
    "TRUST_ROOT_PAYLOAD_TYPE",
    "TRUST_ROOT_SCHEMA_VERSION",
    "Role",
    "TrustRoot",
    "load_trust_root",
    "rotate",
    "sign_trust_root",
    "verify_envelope",
]

TRUST_ROOT_PAYLOAD_TYPE = "application/vnd.edgeship.trust-root+json"
TRUST_ROOT_SCHEMA_VERSION = 1
ROLES = ("root", "release", "hub")
"""root signs trust-root rotations, release signs module manifests, hub signs deployments."""


@record
class Role:
    """Key ids trusted for one role and how many distinct ones must sign."""

    keyids: tuple[str, ...]
    threshold: int = 1


@record
class TrustRoot:
    """A parsed, internally consistent trust root. Treat it as immutable."""

    version: int
    keys: Mapping[str, PublicKey]
    roles: Mapping[str, Role]
    expires: datetime | None = None
    schema_version: int = field(default=TRUST_ROOT_SCHEMA_VERSION)

    def __post_init__(self) -> None:
        _check_consistent(self)

    @classmethod
    def build(
        cls,
        *,
        root: list[PublicKey],
        release: list[PublicKey],
        hub: list[PublicKey],
        root_threshold: int = 1,
        release_threshold: int = 1,
        hub_threshold: int = 1,
        version: int = 1,
        expires: datetime | None = None,
    ) -> TrustRoot:
        """Assemble a trust root from public keys; duplicates within a role collapse."""
        keys: dict[str, PublicKey] = {}
        roles: dict[str, Role] = {}
        for name, members, threshold in (
            ("root", root, root_threshold),
            ("release", release, release_threshold),
            ("hub", hub, hub_threshold),
        ):
            keyids: list[str] = []
            for key in members:
                keys[key.keyid] = key
                if key.keyid not in keyids:
                    keyids.append(key.keyid)
            roles[name] = Role(tuple(keyids), threshold)
        return cls(version=version, keys=keys, roles=roles, expires=expires)

    def role(self, name: str) -> Role:
        if name not in self.roles:
            raise TrustRootError(f"Unknown role {name!r}; a trust root has the roles {', '.join(ROLES)}.")
        return self.roles[name]

    def role_keys(self, name: str) -> dict[str, PublicKey]:
        return {keyid: self.keys[keyid] for keyid in self.role(name).keyids}

    def is_expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": self.schema_version,
            "version": self.version,
            "keys": {kid: {"keytype": KEYTYPE, "public": key.to_base64()} for kid, key in self.keys.items()},
            "roles": {
                name: {"keyids": list(role.keyids), "threshold": role.threshold}
                for name, role in self.roles.items()
            },
        }
        if self.expires is not None:
            out["expires"] = self.expires.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the same root always serializes to the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> TrustRoot:
        """Parse a bare trust-root document (not an envelope); see :func:`rotate` for updates."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise TrustRootError(f"Trust root is not valid JSON: {exc}.") from exc
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> TrustRoot:
        if not isinstance(obj, Mapping):
            raise TrustRootError("Trust root must be a JSON object.")
        schema = obj.get("schemaVersion")
        if schema != TRUST_ROOT_SCHEMA_VERSION:
            raise TrustRootError(
                f"Trust root schemaVersion {schema!r} is not supported (expected "
                f"{TRUST_ROOT_SCHEMA_VERSION}); upgrade edgeship or rewrite the trust root."
            )
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TrustRootError("Trust root 'version' must be an integer of at least 1.")
        keys = _parse_keys(obj.get("keys"))
        roles = _parse_roles(obj.get("roles"))
        return cls(version=version, keys=keys, roles=roles, expires=_parse_expires(obj.get("expires")))


def verify_envelope(
    envelope: Envelope | str | bytes,
    trust_root: TrustRoot,
    role: str,
    expected_payload_type: str,
    *,
    now: datetime | None = None,
) -> bytes:
    """Return the payload of ``envelope`` once ``role``'s threshold of trusted keys signed it.

    Checks, in order: envelope structure, payload type, trust-root expiry, then each
    signature against the keys trusted for ``role``. A key counts at most once, however
    many signatures it made. ``keyid`` only narrows which key is tried (DSSE: it is
    an unauthenticated hint); a missing or foreign ``keyid`` means every role key is tried.

    Raises EnvelopeError, PayloadTypeError, TrustRootError, UnknownKeyError (no signature
    from a key of the role), BadSignatureError (a role key's signature does not verify and
    none verifies) or ThresholdError (some verify, too few distinct keys).
    """
    env = envelope if isinstance(envelope, Envelope) else Envelope.from_json(envelope)
    if env.payload_type != expected_payload_type:
        raise PayloadTypeError(
            f"Envelope payloadType is {env.payload_type!r}, expected {expected_payload_type!r}; "
            "it is a different kind of document."
        )
    when = now if now is not None else datetime.now(timezone.utc)
    if trust_root.is_expired(when):
        raise TrustRootError(
            f"Trust root version {trust_root.version} expired at {trust_root.to_dict()['expires']}; "
            "install a rotated trust root."
        )
    _check_threshold(env, trust_root, role)
    return env.payload


def _check_threshold(env: Envelope, trust_root: TrustRoot, role: str) -> None:
    """Raise unless distinct keys of ``role`` made at least its threshold of valid signatures."""
    trusted = trust_root.role_keys(role)
    threshold = trust_root.role(role).threshold
    message = env.pae()
    accepted: set[str] = set()
    problems: list[str] = []
    saw_bad = False
    for index, signature in enumerate(env.signatures, start=1):
        hint = signature.keyid
        candidates = [trusted[hint]] if hint in trusted else list(trusted.values())
        match = next((key for key in candidates if key.verify(signature.sig, message)), None)
        if match is not None:
            accepted.add(match.keyid)
        elif hint in trusted:
            saw_bad = True
            problems.append(f"signature {index} by {role} key {_short(hint)} does not verify")
        else:
            problems.append(f"signature {index} {_who(hint, trust_root)} matches no trusted {role} key")
    if len(accepted) >= threshold:
        return
    count = f"{role}: {len(accepted)} of {len(env.signatures)} valid signatures, threshold {threshold}"
    if problems:
        detail = "; ".join(problems)
    elif env.signatures:
        detail = f"too few distinct trusted {role} keys signed"
    else:
        detail = "the envelope carries no signatures"
    if accepted or not env.signatures:
        raise ThresholdError(f"{count} ({detail}).")
    if saw_bad:
        raise BadSignatureError(f"{count}: the payload or a signature was altered ({detail}).")
    raise UnknownKeyError(f"{count}: no signature is by a trusted {role} key ({detail}).")


def rotate(
    current: TrustRoot, new_root_envelope: Envelope | str | bytes, *, now: datetime | None = None
) -> TrustRoot:
    """Return the new trust root if ``current`` allows the switch, else raise.

    As TUF's root update: the new root must be signed by a threshold of the *current*
    root keys (the old owners agree) and by a threshold of its *own* root keys (the new
    owners hold their keys), its version must be strictly greater (no rollback), and it
    must not already be expired (no freeze). The current root may itself be expired:
    rotating is how an expired root is replaced. Keys absent from the new root are
    retired: :func:`verify_envelope` with the new root refuses their signatures.
    """
    env = (
        new_root_envelope
        if isinstance(new_root_envelope, Envelope)
        else Envelope.from_json(new_root_envelope)
    )
    _require_trust_root_type(env)
    try:
        _check_threshold(env, current, "root")
    except SignatureError as exc:
        raise type(exc)(f"New trust root is not signed by the current root keys: {exc}") from exc
    new = TrustRoot.from_json(env.payload)
    try:
        _check_threshold(env, new, "root")
    except SignatureError as exc:
        raise type(exc)(f"New trust root is not signed by its own root keys: {exc}") from exc
    if new.version <= current.version:
        raise TrustRootError(
            f"New trust root has version {new.version}, not above the current {current.version}; "
            "refusing a rollback (write it with a higher version)."
        )
    when = now if now is not None else datetime.now(timezone.utc)
    if new.is_expired(when):
        raise TrustRootError(f"New trust root version {new.version} is already expired; refusing it.")
    return new


def sign_trust_root(root: TrustRoot, signers: Iterable[SignerLike]) -> Envelope:
    """Wrap ``root`` in an envelope signed by ``signers`` (its root keys, plus the
    current root's keys when it replaces one)."""
    return sign_envelope(root.to_json().encode("utf-8"), TRUST_ROOT_PAYLOAD_TYPE, signers)


def load_trust_root(data: Envelope | str | bytes) -> TrustRoot:
    """Accept a *first* trust root (provisioning): a self-signed trust-root envelope.

    Nothing earlier vouches for a first root; its authority is the channel it came
    over (the serial cable, the operator's file). The self-signature still proves the
    file is whole and that its root threshold can sign, so it can later be rotated.
    Expiry is checked when the root is used, not here, so an expired device can still
    load it and accept a rotation.
    """
    env = data if isinstance(data, Envelope) else Envelope.from_json(data)
    _require_trust_root_type(env)
    root = TrustRoot.from_json(env.payload)
    try:
        _check_threshold(env, root, "root")
    except SignatureError as exc:
        raise type(exc)(f"Trust root is not signed by its own root keys: {exc}") from exc
    return root


def _require_trust_root_type(env: Envelope) -> None:
    if env.payload_type != TRUST_ROOT_PAYLOAD_TYPE:
        raise PayloadTypeError(
            f"Envelope payloadType is {env.payload_type!r}, expected {TRUST_ROOT_PAYLOAD_TYPE!r}; "
            "it is not a trust root."
        )


def _check_consistent(root: TrustRoot) -> None:
    for keyid, key in root.keys.items():
        if key.keyid != keyid:
            raise TrustRootError(
                f"Trust root lists key id {_short(keyid)} for a key whose id is {_short(key.keyid)} "
                "(a key id is the sha256 of the raw public key)."
            )
    if set(root.roles) != set(ROLES):
        raise TrustRootError(
            f"Trust root roles are {sorted(root.roles)}; exactly {', '.join(ROLES)} are required."
        )
    for name, role in root.roles.items():
        if len(set(role.keyids)) != len(role.keyids):
            raise TrustRootError(f"Trust root role {name!r} lists a key id twice.")
        missing = [kid for kid in role.keyids if kid not in root.keys]
        if missing:
            raise TrustRootError(
                f"Trust root role {name!r} names key {_short(missing[0])}, which 'keys' lacks."
            )
        if not 1 <= role.threshold <= len(role.keyids):
            raise TrustRootError(
                f"Trust root role {name!r} has threshold {role.threshold} with {len(role.keyids)} keys; "
                "it must be between 1 and the number of keys."
            )


def _parse_keys(obj: Any) -> dict[str, PublicKey]:
    if not isinstance(obj, Mapping):
        raise TrustRootError("Trust root 'keys' must be an object of key id -> {keytype, public}.")
    keys: dict[str, PublicKey] = {}
    for keyid, entry in obj.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("public"), str):
            raise TrustRootError(f"Trust root key {_short(keyid)} needs a string 'public'.")
        if entry.get("keytype") != KEYTYPE:
            raise TrustRootError(
                f"Trust root key {_short(keyid)} has keytype {entry.get('keytype')!r}; only ed25519."
            )
        try:
            keys[keyid] = PublicKey.from_text(entry["public"])
        except EdgeshipError as exc:
            raise TrustRootError(f"Trust root key {_short(keyid)}: {exc}") from exc
    return keys


def _parse_roles(obj: Any) -> dict[str, Role]:
    if not isinstance(obj, Mapping):
        raise TrustRootError("Trust root 'roles' must be an object with root, release and hub.")
    roles: dict[str, Role] = {}
    for name, entry in obj.items():
        keyids = entry.get("keyids") if isinstance(entry, Mapping) else None
        threshold = entry.get("threshold") if isinstance(entry, Mapping) else None
        if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
            raise TrustRootError(f"Trust root role {name!r} needs 'keyids', a list of key id strings.")
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            raise TrustRootError(f"Trust root role {name!r} needs an integer 'threshold'.")
        roles[name] = Role(tuple(keyids), threshold)
    return roles


def _parse_expires(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TrustRootError("Trust root 'expires' must be an ISO 8601 UTC time like 2027-01-01T00:00:00Z.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TrustRootError(f"Trust root 'expires' {value!r} is not an ISO 8601 time.") from exc
    if parsed.tzinfo is None:
        raise TrustRootError(f"Trust root 'expires' {value!r} has no time zone; end it with Z.")
    return parsed


def _short(keyid: str | None) -> str:
    return (keyid or "")[:12] or "(none)"


def _who(hint: str | None, root: TrustRoot) -> str:
    """Describe a signature's claimed key for an error: absent, foreign, or another role's."""
    if hint is None:
        return "(no keyid)"
    other = [name for name, role in root.roles.items() if hint in role.keyids]
    if other:
        return f"by key {_short(hint)} (a {'/'.join(other)} key)"
    return f"by unknown key {_short(hint)}"
