"""The hub's one service layer: what REST routes and (later) the MQTT bridge both call.

As Seldon MLServer's ``DataPlane``: transports do the protocol-specific work and
delegate here; nothing in this module knows about HTTP or MQTT. Errors are
``edgeship.errors`` classes without status codes.

Every change that can alter what a device must run (a device created or re-tagged,
a deployment created or deleted) re-evaluates the affected devices at once, signs
a new document for each device whose module set changed, and hands the documents
to ``publish`` (the MQTT publisher) — devices join and leave deployments in
the time one request takes, not IoT Hub's five minutes.

The change and its delivery are atomic through the outbox (ADR 0019): the store
commits a re-evaluation intent with the change, and :meth:`HubService.drain_pending`
deletes it only after the documents are stored. A hub killed in between finishes the
work at its next start (``HubServer`` drains before it opens the API).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeship.deployment import DEFAULT_TTL, ModuleBlobs, ModuleEntry, ModuleSettings
from edgeship.errors import InputError, TransportError
from edgeship.hub.errors import HubNotFoundError
from edgeship.hub.faults import AFTER_CHANGE_COMMIT, BEFORE_TELEMETRY_STORE, fault_point
from edgeship.hub.issuer import DocumentGroup
from edgeship.hub.status import DeploymentStatus, deployment_status
from edgeship.hub.store import (
    DeploymentRecord,
    DesiredRecord,
    DeviceRecord,
    HubStore,
    IssueRequest,
    ModuleRecord,
    ModuleRefRecord,
    Outbox,
    PresenceRecord,
    ReportedRecord,
    TelemetryRecord,
    TelemetryStore,
)
from edgeship.hub.store.outbox import merge
from edgeship.hub.targeting import Condition, Deployment, DeviceFacts, parse, select_modules
from edgeship.hub.telemetry import parse_telemetry
from edgeship.hub.trust import TrustRootFiles, chain_message, check_rotation, signers_for
from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE
from edgeship.modules.verify import verify_module_dir
from edgeship.mqtt.identity import validate_device_id, validate_new_device_id  # one rule (ADR 0015)
from edgeship.registry.blobs import BlobStore, sha256_file
from edgeship.registry.refs import NAME_RULE, validate_model_name
from edgeship.reported import parse_reported
from edgeship.signing import SignerLike, TrustRoot

log = logging.getLogger("edgeship.hub")

__all__ = [
    "DeviceView",
    "HubService",
    "MethodCaller",
    "ModuleRefSpec",
    "Outgoing",
    "Publisher",
    "validate_deployment_id",
    "validate_device_id",
    "validate_module_name",
]

_DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what a target condition can name (tags.a.b)
_METHOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a direct method name (one topic segment)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_MODULE_NAME = 128  # characters of a module name the store keeps (the registry allows 255)
MAX_TAGS_BYTES = 8 * 1024  # bytes of a device's tags as JSON, like IoT Hub's 8 KB twin tags
MAX_TAG_DEPTH = 5  # nesting of tag objects
REEVALUATE_BATCH = 1000  # devices per issuing transaction; each batch is published before the next is signed


@dataclass(frozen=True)
class Outgoing:
    """A signed document to publish retained on ``edgeship/v1/devices/{device_id}/desired``."""

    device_id: str
    sequence: int
    envelope: bytes


Publisher = Callable[[Sequence[Outgoing]], None]
"""Receives each batch of new documents; the MQTT publisher will be one."""

MethodCaller = Callable[[str, str, Mapping[str, Any], float], dict[str, Any]]
"""``(device_id, method, args, timeout) -> the device's answer``; the MQTT bridge's ``invoke``."""

MAX_METHOD_TIMEOUT = 300.0  # seconds an operator may wait for a direct method
MIN_METHOD_TIMEOUT = 0.1  # below this no device can answer over MQTT: the call could only time out


@dataclass(frozen=True)
class ModuleRefSpec:
    """A module a deployment ships, and the per-device settings (port, restartPolicy, env)."""

    name: str
    version: int
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceView:
    device: DeviceRecord
    desired: DesiredRecord | None
    reported: ReportedRecord | None
    presence: PresenceRecord | None = None


def validate_deployment_id(deployment_id: str) -> str:
    if not isinstance(deployment_id, str) or not _DEPLOYMENT_ID.fullmatch(deployment_id):
        raise InputError(
            f"Deployment name {deployment_id!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return deployment_id


def validate_module_name(name: str) -> str:
    """A module name the hub can store and look up: the registry's rule, at most 128 characters.

    Checked before every lookup too, so a malformed name is a 400 naming the rule rather
    than a database error (PostgreSQL refuses NUL characters in text).
    """
    validate_model_name(name)
    if len(name) > MAX_MODULE_NAME:
        raise InputError(f"Module name {name[:40]!r}... has {len(name)} characters; the hub keeps names of at "
                         f"most {MAX_MODULE_NAME} ({NAME_RULE} otherwise).")
    return name


def _check_tags(tags: Any, where: str = "tags", depth: int = 0) -> None:
    if not isinstance(tags, dict):
        raise InputError(f"{where} must be a JSON object of tag names to values.")
    if depth >= MAX_TAG_DEPTH:
        raise InputError(f"{where} nests deeper than {MAX_TAG_DEPTH} levels.")
    for name, value in tags.items():
        if not isinstance(name, str) or not _TAG_NAME.fullmatch(name):
            raise InputError(f"Tag name {name!r} in {where} must be 1-64 letters, digits, '_' or '-'.")
        if isinstance(value, dict):
            _check_tags(value, f"{where}.{name}", depth + 1)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise InputError(f"Tag {where}.{name} must be a string, number, boolean, null or object.")
        elif isinstance(value, float) and not math.isfinite(value):  # PostgreSQL's json refuses NaN and Infinity
            raise InputError(f"Tag {where}.{name} must be a finite number; JSON has no NaN or Infinity.")
    if depth == 0 and len(json.dumps(tags)) > MAX_TAGS_BYTES:
        raise InputError(f"Tags are larger than {MAX_TAGS_BYTES} bytes as JSON; keep tags small.")


@lru_cache(maxsize=1024)
def _parsed(text: str) -> Condition:
    """Conditions are re-parsed on every evaluation otherwise; they are immutable, so cache them."""
    return parse(text)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class HubService:
    """Devices, modules, deployments and the signed documents that follow from them."""

    def __init__(
        self,
        store: HubStore,
        blobs: BlobStore,
        trust_root: TrustRoot,
        signers: Sequence[SignerLike],
        *,
        publish: Publisher | None = None,
        clock: Callable[[], datetime] = _utcnow,
        ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        if not signers:
            raise InputError("The hub needs at least one 'hub' signing key to sign deployment documents.")
        self.store = store
        self.blobs = blobs
        self.trust_root = trust_root
        self.signers = list(signers)
        self.publish = publish
        self.clock = clock
        self.ttl = ttl
        self._trust_lock = threading.RLock()
        """Held by a rotation from its check to its last re-signed document, and by each
        issuing batch while it reads the signers: two rotations run one after the other
        (the second is checked against the root the first installed), and no document is
        stored signed by a key a finished rotation dropped."""

    # devices -----------------------------------------------------------------
    def create_device(self, device_id: str, tags: Mapping[str, Any] | None = None) -> DeviceView:
        validate_new_device_id(device_id)  # not a hub identity: the name becomes a broker login
        tags = dict(tags or {})
        _check_tags(tags)
        self.store.add_device(device_id, tags, self.clock())  # with its re-evaluation intent
        fault_point(AFTER_CHANGE_COMMIT)
        self._deliver_trust_root([device_id])
        self.drain_pending()
        return self.get_device(device_id)

    def create_devices(self, devices: Iterable[tuple[str, Mapping[str, Any] | None]]) -> int:
        """Create many devices at once (provisioning a fleet); each gets its first document. Returns the count.

        One insert and one batched re-evaluation instead of a transaction and a
        re-evaluation per device; all or none are created.
        """
        rows: list[tuple[str, dict[str, Any]]] = []
        for device_id, tags in devices:
            validate_new_device_id(device_id)
            tags = dict(tags or {})
            _check_tags(tags)
            rows.append((device_id, tags))
        self.store.add_devices(rows, self.clock())  # with one re-evaluation intent for all of them
        fault_point(AFTER_CHANGE_COMMIT)
        self._deliver_trust_root([device_id for device_id, _tags in rows])
        self.drain_pending()
        return len(rows)

    def update_tags(self, device_id: str, tags: Mapping[str, Any]) -> DeviceView:
        """Replace the device's tags (as IoT Hub's twin tags) and re-target it at once."""
        tags = dict(tags)
        _check_tags(tags)
        self.store.set_tags(validate_device_id(device_id), tags)  # with its re-evaluation intent
        fault_point(AFTER_CHANGE_COMMIT)
        self.drain_pending()
        return self.get_device(device_id)

    def get_device(self, device_id: str) -> DeviceView:
        device = self.store.get_device(validate_device_id(device_id))
        desired = self.store.latest_desired([device_id]).get(device_id)
        presence = self.telemetry.presence([device_id]).get(device_id)
        return DeviceView(device, desired, self.store.reported([device_id]).get(device_id), presence)

    def list_devices(self) -> list[DeviceView]:
        desired = self.store.latest_desired()
        reported = self.store.reported()
        presence = self.telemetry.presence()
        return [
            DeviceView(d, desired.get(d.id), reported.get(d.id), presence.get(d.id)) for d in self.store.list_devices()
        ]

    def record_reported(self, device_id: str, state: Mapping[str, Any]) -> ReportedRecord:
        """Store a device's reported state (the MQTT bridge calls this for ``.../reported``).

        Only a report that validates against ``edgeship.reported.ReportedState`` is stored
        (operators see it, the deployment status reads it); it is stored as received.
        """
        if not isinstance(state, Mapping):
            raise InputError("Reported state must be a JSON object.")
        claimed = state.get("deviceId")
        if claimed is not None and claimed != device_id:
            raise InputError(f"Reported state names device {claimed!r} but arrived for {device_id!r}; ignored.")
        parse_reported(dict(state))
        return self.store.put_reported(validate_device_id(device_id), dict(state), self.clock())

    def record_reported_many(
        self, items: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> tuple[list[ReportedRecord], list[tuple[str, str]]]:
        """:meth:`record_reported` for a batch, in one transaction: ``(stored, [(device id, why refused)])``.

        For the MQTT bridge's worker: reports that arrived since its last write go in
        together (one write per report cost about 1 ms on SQLite; a batch of 500 about
        20 ms). A report that fails ``edgeship.reported``'s schema, or an unknown device, is refused alone; the others
        are stored. A device reported twice keeps its last report.
        """
        accepted: list[tuple[str, dict[str, Any], datetime]] = []
        refused: list[tuple[str, str]] = []
        now = self.clock()
        for device_id, state in items:
            try:
                if not isinstance(state, Mapping):
                    raise InputError("Reported state must be a JSON object.")
                claimed = state.get("deviceId")
                if claimed is not None and claimed != device_id:
                    raise InputError(
                        f"Reported state names device {claimed!r} but arrived for {device_id!r}; ignored."
                    )
                parse_reported(dict(state))
                accepted.append((validate_device_id(device_id), dict(state), now))
            except InputError as exc:
                refused.append((device_id, str(exc)))
        stored, unknown = self.store.put_reported_many(accepted)
        refused.extend((device_id, f"No device {device_id!r} on the hub.") for device_id in unknown)
        return stored, refused

    # telemetry, presence and direct methods (called by the MQTT bridge and the REST API) ---------------
    method_caller: MethodCaller | None = None
    """Set by the MQTT bridge when it starts; ``None`` means direct methods cannot reach devices."""

    @cached_property
    def telemetry(self) -> TelemetryStore:
        return TelemetryStore(self.store)

    def record_telemetry(self, device_id: str, batch: Mapping[str, Any]) -> TelemetryRecord | None:
        """Validate a telemetry batch (``edgeship.hub.telemetry``) and store its new samples, bounded per device.

        Samples the hub already holds (same ``seq`` and ``time``: a re-sent batch) are dropped;
        None when none was new (``TelemetryStore.add``). Either way the batch is acknowledged.
        """
        parsed = parse_telemetry(batch)
        if parsed.device_id != device_id:
            raise InputError(f"Telemetry names device {parsed.device_id!r} but arrived for {device_id!r}; ignored.")
        fault_point(BEFORE_TELEMETRY_STORE)
        return self.telemetry.add(validate_device_id(device_id), dict(batch), self.clock())

    def record_online(self, device_id: str, online: bool) -> PresenceRecord:
        """The device's retained ``online`` flag: ``True`` when it connects, ``False`` from its last will."""
        return self.telemetry.set_online(validate_device_id(device_id), bool(online), self.clock())

    def current_documents(self) -> list[Outgoing]:
        """The newest signed document of every device: what the MQTT bridge re-publishes on (re)connect."""
        return [
            Outgoing(r.device_id, r.sequence, r.envelope.encode("utf-8")) for r in self.store.latest_desired().values()
        ]

    def recent_telemetry(self, device_id: str, limit: int = 10) -> list[TelemetryRecord]:
        if not 1 <= limit <= 1000:
            raise InputError(f"limit {limit} must be between 1 and 1000.")
        return self.telemetry.recent(validate_device_id(device_id), limit)

    def invoke_method(
        self, device_id: str, method: str, args: Mapping[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Call a direct method on a device and return its answer ``{"status", "result"|"error"}``."""
        self.store.get_device(validate_device_id(device_id))  # HubNotFoundError for an unknown device
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise InputError(f"Method name {method!r} must be 1-64 letters, digits, '.', '_' or '-'.")
        if not isinstance(args, Mapping):
            raise InputError("Direct method arguments must be a JSON object.")
        try:
            json.dumps(dict(args), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InputError(f"Direct method arguments must be plain JSON (finite numbers, no NaN): {exc}.") from exc
        if not MIN_METHOD_TIMEOUT <= timeout <= MAX_METHOD_TIMEOUT:
            raise InputError(
                f"Direct method timeout {timeout} s must be between {MIN_METHOD_TIMEOUT} and {MAX_METHOD_TIMEOUT} s."
            )
        if self.method_caller is None:
            raise TransportError(
                "This hub has no MQTT connection, so it cannot reach devices; run it with 'edgeship hub serve'."
            )
        return self.method_caller(device_id, method, args, timeout)

    # trust-root rotation (ADR 0013) ------------------------------------------------
    trust_files: TrustRootFiles | None = None
    """Where rotations are kept (the workspace); ``None``: this hub cannot rotate (tests, in-memory)."""
    hub_keys: Callable[[], Sequence[SignerLike]] | None = None
    """Every hub signing key this hub holds, so a rotation to another hub key can switch the signer."""
    publish_trust_root: Callable[[bytes, Sequence[str]], None] | None = None
    """Set by the MQTT bridge: publish the chain retained on each listed device's ``trust-root`` topic."""

    forget_device: Callable[[str], None] | None = None
    """Set by the MQTT bridge: clear a deleted device's retained messages (``edgeship.hub.credentials``)."""

    def trust_root_message(self) -> bytes | None:
        """The retained ``trust-root`` payload (every rotation so far), or None before the first one."""
        return chain_message(self.trust_files.chain()) if self.trust_files is not None else None

    def rotate_trust_root(self, envelope: bytes) -> TrustRoot:
        """Take a new trust root, publish it to every device, then re-sign their documents if the hub key changed.

        Checked before anything is written: it rotates from the current root (as the
        agent checks it) and this hub holds enough of its hub keys. The root goes out
        before any document signed by a new key, so devices can verify those. The whole
        rotation holds the trust lock: a concurrent second rotation waits, then is checked
        against the root this one installed (the same envelope twice: the second is refused).
        """
        if self.trust_files is None:
            raise InputError(
                "This hub keeps no trust-root files, so it cannot rotate; run it with 'edgeship hub serve'."
            )
        with self._trust_lock:
            new = check_rotation(self.trust_root, envelope, self.clock())
            signers = signers_for(new, self.hub_keys() if self.hub_keys else [], self.signers)
            resign = [s.keyid for s in signers] != [s.keyid for s in self.signers]
            # The intent goes in before the files: a hub killed after saving them re-signs at start
            # (with the key the new root lists); killed before, it re-signs harmlessly with the old one.
            intent = self.outbox.add(f"trust root v{new.version} re-sign", None, force=True) if resign else None
            self.trust_files.save(envelope, new)
            self.trust_root = new
            self._deliver_trust_root(None)
            if resign:
                self.signers = list(signers)
                for batch in self._reevaluate_batches(None, force=True):
                    self._deliver(batch)
                self.outbox.finish([intent] if intent is not None else [])
            return new

    def _deliver_trust_root(self, device_ids: Sequence[str] | None) -> None:
        message = self.trust_root_message() if self.publish_trust_root is not None else None
        if message is not None and self.publish_trust_root is not None:
            ids = device_ids if device_ids is not None else [d.id for d in self.store.list_devices()]
            self.publish_trust_root(message, ids)

    # modules -----------------------------------------------------------------
    def upload_module(self, directory: Path) -> ModuleRecord:
        """Verify a module directory against the hub's release keys, then store its blobs and envelope.

        Blobs go in first (content-addressed, idempotent), so a module row never
        names a blob the hub cannot serve.
        """
        directory = Path(directory)
        verified = verify_module_dir(directory, self.trust_root)
        manifest = verified.manifest
        validate_module_name(manifest.name)
        for rel, digest in ((manifest.bundle.path, manifest.bundle.digest),) + (
            ((manifest.image.archive.path, manifest.image.archive.digest),)
            if manifest.image and manifest.image.archive
            else ()
        ):
            self.blobs.put_file(directory / rel, digest.removeprefix("sha256:"))
        record = ModuleRecord(
            name=manifest.name,
            version=manifest.version,
            envelope=json.loads((directory / ENVELOPE_FILE).read_bytes()),
            manifest_digest="sha256:" + sha256_file(directory / MANIFEST_FILE),
            bundle_digest=manifest.bundle.digest,
            image_digest=manifest.image.archive.digest if manifest.image and manifest.image.archive else None,
            variant=manifest.variant,
            created=self.clock(),
        )
        stored, _new = self.store.add_module(record)
        return stored

    def upload_from_workspace(self, workspace_root: Path, name: str, version: int | None = None) -> ModuleRecord:
        """Upload a module that ``edgeship package`` stored in a (packaging) workspace.

        ``workspace_root`` comes from the caller: it must be an absolute path (a relative
        or empty one would resolve against the hub's working directory or its default
        home), and a path that is no workspace is the caller's mistake (InputError).
        """
        from edgeship.errors import WorkspaceError
        from edgeship.modules.store import ModuleStore
        from edgeship.workspace import Workspace

        root = Path(workspace_root)
        if not str(workspace_root) or not root.is_absolute():
            raise InputError(
                f"The workspace {str(workspace_root)!r} must be an absolute path on the hub's machine, "
                "e.g. the EDGESHIP_HOME 'edgeship package' used."
            )
        try:
            store = ModuleStore(Workspace.at(root))
        except (WorkspaceError, OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise InputError(
                f"No edgeship workspace at {str(workspace_root)!r} on the hub's machine; pass the folder where "
                "'edgeship package' stored the module (its EDGESHIP_HOME)."
            ) from exc
        except sqlite3.Error as exc:  # registry.db exists but is not a database (or is locked for good)
            raise InputError(
                f"The workspace at {str(workspace_root)!r} has a registry database the hub cannot read ({exc}); "
                "check it with 'edgeship module list' on that machine."
            ) from exc
        stored = store.get(name, version)
        return self.upload_module(stored.directory)

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        return self.store.list_modules(None if name is None else validate_module_name(name))

    def get_module(self, name: str, version: int) -> ModuleRecord:
        return self.store.get_module(validate_module_name(name), version)

    def blob_file(self, digest: str) -> Path:
        """The file of a module artifact by digest. Only blobs of stored modules are served,
        so the hub never exposes other workspace blobs (registered models) by guessing."""
        if not _DIGEST.fullmatch(digest):
            raise InputError(f"Blob address {digest!r} must be 'sha256:' and 64 lowercase hex digits.")
        path = self.blobs.path_of(digest.removeprefix("sha256:"))
        if not self.store.has_blob(digest) or not path.is_file():
            raise HubNotFoundError(f"No blob {digest} on the hub.")
        return path

    # deployments -------------------------------------------------------------
    def create_deployment(
        self, deployment_id: str, target_condition: str, modules: Iterable[ModuleRefSpec], priority: int = 0
    ) -> DeploymentRecord:
        validate_deployment_id(deployment_id)
        if "\x00" in target_condition:  # the parser takes any character in a quoted value; a database may not
            raise InputError("The target condition holds a NUL character; remove it.")
        _parsed(target_condition)  # TargetConditionError (an InputError) names the column
        refs: list[ModuleRefRecord] = []
        for spec in modules:
            validate_module_name(spec.name)
            try:
                settings = ModuleSettings.model_validate(dict(spec.settings))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise InputError(f"Settings of module {spec.name}:{spec.version}: {where}: {first['msg']}.") from exc
            if any(r.name == spec.name for r in refs):
                raise InputError(f"Deployment {deployment_id!r} names module {spec.name!r} twice; keep one version.")
            refs.append(ModuleRefRecord(spec.name, spec.version, settings.model_dump(by_alias=True, exclude_none=True)))
        if not refs:
            raise InputError(f"Deployment {deployment_id!r} has no modules; add at least one (NAME:VERSION).")
        record = self.store.add_deployment(  # with its re-evaluation intent, in one transaction
            DeploymentRecord(deployment_id, target_condition, int(priority), self.clock(), tuple(refs))
        )
        fault_point(AFTER_CHANGE_COMMIT)
        self.drain_pending()
        return record

    def list_deployments(self) -> list[DeploymentRecord]:
        return self.store.list_deployments()

    def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        return self.store.get_deployment(validate_deployment_id(deployment_id))

    def delete_deployment(self, deployment_id: str) -> None:
        self.store.delete_deployment(validate_deployment_id(deployment_id))  # with its re-evaluation intent
        fault_point(AFTER_CHANGE_COMMIT)
        self.drain_pending()

    def deployment_status(self, deployment_id: str) -> DeploymentStatus:
        record = self.store.get_deployment(validate_deployment_id(deployment_id))
        return deployment_status(
            record.id,
            _parsed(record.target_condition),
            self.store.list_devices(),
            self.store.latest_desired(),
            self.store.reported(),
        )

    # re-evaluation -----------------------------------------------------------
    def reevaluate(self, device_ids: Iterable[str] | None = None) -> list[Outgoing]:
        """Sign and store a new document for each device (of ``device_ids``, or all) whose module set changed.

        Also re-issues a document that is older than half its time to live, so a
        device is never frozen by expiry while the hub runs. Returns the documents
        to publish; the caller (or :meth:`_deliver`) publishes them.
        """
        return [o for batch in self._reevaluate_batches(device_ids) for o in batch]

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store)

    def drain_pending(self) -> int:
        """Serve every pending re-evaluation intent: re-evaluate, sign, store, publish, then delete the intents.

        Called right after every change (in the request that made it) and at hub start,
        so a change whose delivery a crash interrupted is finished without waiting for
        the refresh timer. Idempotent: a device whose module set did not change gets no
        new document, so draining twice (or two hubs at once) issues nothing twice. An
        error leaves the intents for the next drain. Returns the documents that went out.
        """
        work = merge(self.outbox.pending())
        if work is None:
            return 0
        sent = 0
        for batch in self._reevaluate_batches(work.device_ids, force=work.force):
            self._deliver(batch)  # each batch goes out as soon as it is stored, while later ones are signed
            sent += len(batch)
        self.outbox.finish(work.intent_ids)
        return sent

    def refresh(self) -> int:
        """Re-issue and publish every document past half its time to live (and any whose modules changed).

        ``HubServer`` calls this on a timer, so a device that hears nothing new still
        gets a fresh document long before its current one expires (410, freeze).
        Pending intents are served first. Returns how many documents went out.
        """
        sent = self.drain_pending()
        for batch in self._reevaluate_batches(None):
            self._deliver(batch)
            sent += len(batch)
        return sent

    def _reevaluate_batches(self, device_ids: Iterable[str] | None, *, force: bool = False) -> Iterator[list[Outgoing]]:
        """:meth:`reevaluate` in batches of :data:`REEVALUATE_BATCH` devices, one store transaction each.

        Two reads for all devices (devices, newest documents), then per device only
        the layering rule; devices with the same winning modules share one
        :class:`DocumentGroup` (fingerprint, module entries, document template), so
        the per-device cost is the signature and the insert. ``force`` re-signs every
        device's document (a new hub key after a trust-root rotation).

        Each batch is signed and stored under the trust lock with the signers current at
        that moment (a copy), so a rotation never waits for a whole fleet's re-evaluation,
        and a re-evaluation that began before a rotation signs its later batches with the
        new key. Batches are published outside the lock.
        """
        ids = None if device_ids is None else list(device_ids)
        with self._trust_lock:
            signers = list(self.signers)
        layered = self._layered()
        now = self.clock()
        reissue_before = now if force else now - self.ttl / 2
        latest = self.store.latest_fingerprints(ids)  # one read, so unchanged devices cost no write transaction
        groups: dict[tuple[tuple[str, str], ...], DocumentGroup] = {}
        pending: list[IssueRequest] = []
        for device in self.store.list_devices(ids):
            selection = select_modules(DeviceFacts(device.id, device.tags), layered)
            key = tuple((name, chosen.deployment_id) for name, chosen in selection.items())
            group = groups.get(key)
            if group is None:
                contributing = sorted({chosen.deployment_id for chosen in selection.values()})
                fingerprint = json.dumps(
                    {
                        "modules": {name: chosen.module[0] for name, chosen in selection.items()},
                        "deployments": contributing,
                    },
                    sort_keys=True,
                    separators=(",", ":"),
                )
                entries = {name: chosen.module[1] for name, chosen in selection.items()}
                group = groups[key] = DocumentGroup(
                    entries, contributing, fingerprint, issued_at=now, ttl=self.ttl, signers=signers
                )
            prior = latest.get(device.id)
            if prior is not None and prior[0] == group.fingerprint and prior[1] > reissue_before:
                continue  # HubStore.issue_many re-checks under the device lock; this only skips the common case
            pending.append(IssueRequest(
                device.id, group.fingerprint, group.deployments,
                partial(group.sign, device.id),
            ))
            if len(pending) >= REEVALUATE_BATCH:
                yield self._issue(pending, reissue_before, groups.values())
                pending = []
        if pending:
            yield self._issue(pending, reissue_before, groups.values())

    def _issue(
        self, requests: list[IssueRequest], reissue_before: datetime, groups: Iterable[DocumentGroup]
    ) -> list[Outgoing]:
        with self._trust_lock:
            signers = list(self.signers)
            for group in groups:
                group.signers = signers
            issued = self.store.issue_many(requests, reissue_before=reissue_before)
        return [Outgoing(d.device_id, d.sequence, d.envelope.encode("utf-8")) for d in issued]

    def _layered(self) -> list[Deployment[tuple[dict[str, Any], ModuleEntry]]]:
        """Every deployment as the layering rule sees it; each module carries (fingerprint part, entry)."""
        modules: dict[tuple[str, int], ModuleRecord] = {}
        result: list[Deployment[tuple[dict[str, Any], ModuleEntry]]] = []
        for record in self.store.list_deployments():
            chosen: dict[str, tuple[dict[str, Any], ModuleEntry]] = {}
            for ref in record.modules:
                key = (ref.name, ref.version)
                if key not in modules:
                    modules[key] = self.store.get_module(ref.name, ref.version)
                module = modules[key]
                entry = ModuleEntry(
                    module=module.envelope,
                    blobs=ModuleBlobs(
                        bundle=f"/blobs/{module.bundle_digest}",
                        image=f"/blobs/{module.image_digest}" if module.image_digest else None,
                    ),
                    settings=_stored_settings(record.id, ref.name, ref.settings),
                )
                part = {"ref": module.ref, "manifest": module.manifest_digest, "settings": entry.settings.model_dump(
                    by_alias=True, exclude_none=True)}
                chosen[ref.name] = (part, entry)
            condition = _parsed(record.target_condition)
            result.append(Deployment(record.id, record.priority, record.created, condition, chosen))
        return result

    def _deliver(self, outgoing: list[Outgoing]) -> None:
        if outgoing and self.publish is not None:
            self.publish(outgoing)


def _stored_settings(deployment_id: str, module: str, stored: dict[str, Any]) -> ModuleSettings:
    """A stored module's settings; ``env`` that a hub before the trust split accepted is dropped.

    Such a deployment was created when the hub still passed environment variables to
    devices; signing them now would make every agent refuse the document (400), so the
    hub leaves them out and says so. The module's own release decides its environment.
    """
    if stored.get("env"):
        log.warning(
            "deployment %s, module %s: settings.env (%s) is no longer sent to devices: only a release-signed "
            "module may set environment variables (docs/security.md); delete and re-create the deployment "
            "without it", deployment_id, module, ", ".join(sorted(stored["env"])),
        )
        stored = {k: v for k, v in stored.items() if k != "env"}
    return ModuleSettings.model_validate(stored, strict=False)
